"""The docs stay true: docs/architecture.md's file inventory matches the tree, the README stays a short page
for users that links every docs page, and every relative link of the README and docs/ resolves, to a file
and, with an anchor, to a heading of it.

The tree is what git tracks (``git ls-files``): data, virtual environments and caches are not part of it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from project_paths import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()
ARCHITECTURE = (PROJECT_ROOT / "docs" / "architecture.md").read_text()
NAME = re.compile(r"(?<![\w/.-])(\.?[\w-]+(?:\.[\w-]+)*(?:/[\w.-]*)*)")
FILE_SUFFIXES = (".py", ".txt", ".sh", ".conf", ".properties", ".yaml", ".toml", ".example", ".md")
README_MAX_LINES = 250
FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def tracked() -> list[PurePosixPath]:
    listed = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    return [PurePosixPath(line) for line in listed.stdout.splitlines()]


def inventory_block() -> str:
    section = ARCHITECTURE[ARCHITECTURE.index("## File inventory"):]
    return section[section.index("```") + 3:section.index("```", section.index("```") + 3)]


def inventory_names() -> set[str]:
    """Every file or folder name the inventory mentions (``emr/``, ``cluster.py``, ``.ci/run`` ...)."""
    names = set()
    for token in NAME.findall(inventory_block()):
        if "/" in token or token.endswith(FILE_SUFFIXES) or token in ("Makefile", "Dockerfile"):
            names.update(part for part in token.rstrip("/").split("/") if part)
    return names


def test_every_name_in_the_inventory_exists_in_the_tree():
    existing = {part for path in tracked() for part in path.parts}
    assert sorted(inventory_names() - existing) == []


@pytest.mark.parametrize("folder", ["plugins/image_pipeline", "spark_jobs", "tools/image_tools", "bench",
                                    "bootstrap", "conf", "mwaa"])
def test_the_inventory_names_every_module_and_file_of(folder):
    prefix = PurePosixPath(folder)
    files = [p for p in tracked() if prefix in p.parents and p.name != "__init__.py"]
    assert files
    assert sorted({p.name for p in files} - inventory_names()) == []
    sub_packages = {p.parts[len(prefix.parts)] for p in tracked() if prefix in p.parents
                    and len(p.parts) > len(prefix.parts) + 1}
    assert sorted(sub_packages - inventory_names()) == []


def test_the_inventory_names_every_top_level_entry():
    top = {p.parts[0] for p in tracked()} - {".gitignore"}
    assert sorted(top - inventory_names()) == []


def test_the_checks_see_the_inventory():
    assert {"wiring", "emr", "cluster.py", "predict_photos.py", "image_jobs", "decode.py", "run", ".ci"} \
        <= inventory_names()


def test_the_inventory_names_every_test_layer():
    layers = {p.parts[1] for p in tracked() if p.parts[0] == "tests" and len(p.parts) > 2}
    assert layers >= {"unit", "spark", "dag", "mwaa", "ui"}
    assert sorted(layers - inventory_names()) == []


def test_the_readme_is_a_short_page_that_starts_with_the_two_commands():
    assert len(README.splitlines()) < README_MAX_LINES
    first_block = FENCE.search(README).group(0)
    assert "make run" in first_block and "make test" in first_block
    assert "## File inventory" not in README and "docs/architecture.md" in README


def test_every_docs_page_is_linked_from_the_readme():
    links = {target for target, _ in links_of(README)}
    pages = {p.as_posix() for p in tracked() if p.parts[0] == "docs" and p.suffix in (".md", ".json")
             and len(p.parts) == 2}
    assert {"docs/architecture.md", "docs/decisions/README.md"} <= links
    assert sorted(pages - links) == []


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup and punctuation dropped, lower case, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link: its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings (outside code blocks); repeated headings get -1, -2 ..."""
    found: set[str] = set()
    for heading in re.findall(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", text), re.M):
        base, n = slug(heading), 0
        while (candidate := base if n == 0 else f"{base}-{n}") in found:
            n += 1
        found.add(candidate)
    return found


def links_of(text: str) -> list[tuple[str, str]]:
    """(target, anchor) of every relative link outside code (``docs/aws.md#settings`` -> docs/aws.md,
    settings; ``#x`` -> '', x)."""
    prose = re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))
    out = []
    for link in LINK.findall(prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto: ...
            continue
        target, _, anchor = link.partition("#")
        out.append((target, anchor))
    return out


def dead_links(page: Path) -> list[str]:
    """The links of ``page`` whose file does not exist, or whose anchor is no heading of the page it names."""
    dead = []
    for target, anchor in links_of(page.read_text()):
        resolved = (page.parent / target).resolve() if target else page
        if not resolved.exists():
            dead.append(f"{target}#{anchor}" if anchor else target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
            dead.append(f"{target}#{anchor}")
    return dead


def markdown_pages() -> list[PurePosixPath]:
    return [p for p in tracked() if p.suffix == ".md" and (p.parts[0] == "docs" or p.as_posix() == "README.md")]


def test_every_relative_link_of_the_readme_and_docs_resolves_to_a_file_and_a_heading():
    pages = markdown_pages()
    assert len(pages) > 10
    dead = {page.as_posix(): dead_links(PROJECT_ROOT / page) for page in pages}
    assert {page: links for page, links in dead.items() if links} == {}


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## Settings: `make x`\n\n```bash\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[ok](other.md#settings-make-x) [top](#page) [gone](missing.md) "
                    "[wrong](other.md#not-a-heading) [code](other.md#not-a-heading-1) [web](https://example.org/x)\n"
                    "`[in code](nowhere.md)`\n\n```\n[in a block](nowhere.md)\n```\n")
    assert dead_links(page) == ["missing.md", "other.md#not-a-heading", "other.md#not-a-heading-1"]


def test_anchors_follow_githubs_rules():
    assert slug("Training: `spark_jobs/train_models.py`") == "training-spark_jobstrain_modelspy"
    assert slug("6. Settings") == "6-settings"
    assert slug("Nodes without internet: the wheelhouse") == "nodes-without-internet-the-wheelhouse"
    assert anchors("# A\n## A\n## A\n") == {"a", "a-1", "a-2"}
