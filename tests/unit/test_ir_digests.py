"""The digests of an exported OpenVINO IR: written in sha256sum's format, every damage named."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from image_jobs.ir_digests import file_sha256, ir_problem, parse_digests, read_digests, write_digests


@pytest.fixture
def ir(tmp_path):
    xml = tmp_path / "mobilenet_v2-0123456789abcdef.xml"
    xml.write_text("<net/>")
    xml.with_suffix(".bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    return xml


def test_the_digests_are_sha256sums_of_both_files(ir):
    digests = write_digests(ir)
    assert digests == {ir.name: hashlib.sha256(b"<net/>").hexdigest(),
                       ir.with_suffix(".bin").name: hashlib.sha256(bytes(range(256)) * 4096).hexdigest()}
    assert read_digests(ir) == digests
    assert ir_problem(ir, digests) is None
    # the format sha256sum checks
    done = subprocess.run(["sha256sum", "-c", ir.with_suffix(".sha256").name], cwd=ir.parent,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_truncated_bin_is_named_with_its_size(ir):
    digests = write_digests(ir)
    bin_ = ir.with_suffix(".bin")
    with bin_.open("r+b") as f:
        f.truncate(1000)
    problem = ir_problem(ir, digests)
    assert problem.startswith(f"OpenVINO IR file {bin_} (1000 bytes) does not match its digest")
    assert f"expected {digests[bin_.name][:16]}" in problem and problem.endswith("truncated or corrupted")


def test_one_flipped_byte_is_found(ir):
    digests = write_digests(ir)
    bin_ = ir.with_suffix(".bin")
    data = bytearray(bin_.read_bytes())
    data[500_000] ^= 1
    bin_.write_bytes(bytes(data))
    assert "does not match its digest" in ir_problem(ir, digests)
    assert file_sha256(bin_) != digests[bin_.name]


def test_missing_files_and_missing_digests_are_named(ir):
    assert ir_problem(ir, read_digests(ir)).endswith(f"has no digests file ({ir.stem}.sha256), so it cannot be "
                                                     "checked")
    digests = write_digests(ir)
    ir.with_suffix(".bin").unlink()
    assert ir_problem(ir, digests) == f"OpenVINO IR file {ir.with_suffix('.bin')} is missing"
    assert ir_problem(ir, {ir.name: digests[ir.name]}).endswith(f"do not name its file {ir.stem}.bin")


def test_a_digests_file_that_is_not_one_is_refused_naming_its_line(ir):
    path = ir.with_suffix(".sha256")
    path.write_text(f"{'a' * 64}  {ir.name}\nnot a digest line\n")
    with pytest.raises(ValueError, match=rf"{path} line 2 is not '<sha256 hex>  <file name>': 'not a digest line'"):
        read_digests(ir)
    assert parse_digests(f"\n{'b' * 64}  x.bin\n", "here") == {"x.bin": "b" * 64}
