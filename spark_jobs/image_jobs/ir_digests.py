"""An exported OpenVINO IR's digests: written when it is exported, checked before it is used.

An IR folder holds ``<name>.xml`` (the graph), ``<name>.bin`` (the weights) and ``<name>.sha256``: one
``<hex>  <file>`` line per file, as ``sha256sum`` writes them (``sha256sum -c`` checks a folder by hand).
A ``.bin`` truncated by a full disk or an interrupted copy, or damaged on its way to a node, would
otherwise surface as a crash deep inside OpenVINO, or worse as wrong features; checked against its
digest it is named: which file, how many bytes, which digest was expected.

The driver checks the IR it exports or finds beside local weights (and exports a damaged one again: it is
derived from the weights); every Python worker checks the copies shipped to it before compiling them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

DIGESTS_SUFFIX = ".sha256"
_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ir_parts(xml: str | Path) -> tuple[Path, Path]:
    """The two files of the IR whose graph is ``xml``: the graph and its ``.bin``."""
    xml = Path(xml)
    return xml, xml.with_suffix(".bin")


def digests_file(xml: str | Path) -> Path:
    return Path(xml).with_suffix(DIGESTS_SUFFIX)


def write_digests(xml: str | Path) -> dict[str, str]:
    """Write the digests file of the IR at ``xml`` (both files written and closed); returns the digests."""
    digests = {part.name: file_sha256(part) for part in ir_parts(xml)}
    digests_file(xml).write_text("".join(f"{hex_}  {name}\n" for name, hex_ in digests.items()))
    return digests


def parse_digests(text: str, where: str) -> dict[str, str]:
    """``{file name: hex}`` from a digests file's text; a ValueError naming ``where`` when it is not one."""
    digests = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        hex_, sep, name = line.partition("  ")
        if not sep or len(hex_) != 64 or any(c not in "0123456789abcdef" for c in hex_) or not name.strip():
            raise ValueError(f"{where} line {number} is not '<sha256 hex>  <file name>': {line[:120]!r}")
        digests[name.strip()] = hex_
    return digests


def read_digests(xml: str | Path) -> dict[str, str] | None:
    """The digests stored beside the IR at ``xml``; None when it has no digests file."""
    path = digests_file(xml)
    if not path.exists():
        return None
    return parse_digests(path.read_text(errors="replace"), str(path))


def ir_problem(xml: str | Path, digests: dict[str, str] | None) -> str | None:
    """What is wrong with the IR at ``xml`` measured against ``digests``; None when both files match."""
    if digests is None:
        return f"OpenVINO IR {xml} has no digests file ({digests_file(xml).name}), so it cannot be checked"
    for part in ir_parts(xml):
        expected = digests.get(part.name)
        if expected is None:
            return f"the digests of OpenVINO IR {xml} do not name its file {part.name}"
        if not part.is_file():
            return f"OpenVINO IR file {part} is missing"
        actual = file_sha256(part)
        if actual != expected:
            return (f"OpenVINO IR file {part} ({part.stat().st_size} bytes) does not match its digest "
                    f"(sha256 {actual[:16]}..., expected {expected[:16]}...): it is truncated or corrupted")
    return None
