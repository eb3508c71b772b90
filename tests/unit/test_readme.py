"""The README's layout section matches the tree, and every page of docs/ is linked from the README.

The tree is what git tracks (``git ls-files``): data, virtual environments and caches are not part of it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import PurePosixPath

import pytest

from project_paths import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()
NAME = re.compile(r"(?<![\w/.-])(\.?[\w-]+(?:\.[\w-]+)*(?:/[\w.-]*)*)")
FILE_SUFFIXES = (".py", ".txt", ".sh", ".conf", ".properties", ".yaml", ".toml", ".example", ".md")


def tracked() -> list[PurePosixPath]:
    listed = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    return [PurePosixPath(line) for line in listed.stdout.splitlines()]


def layout_block() -> str:
    section = README[README.index("## Layout"):]
    return section[section.index("```") + 3:section.index("```", section.index("```") + 3)]


def layout_names() -> set[str]:
    """Every file or folder name the layout section mentions (``emr/``, ``cluster.py``, ``.ci/run`` ...)."""
    names = set()
    for token in NAME.findall(layout_block()):
        if "/" in token or token.endswith(FILE_SUFFIXES) or token in ("Makefile", "Dockerfile"):
            names.update(part for part in token.rstrip("/").split("/") if part)
    return names


def test_every_name_in_the_layout_exists_in_the_tree():
    existing = {part for path in tracked() for part in path.parts}
    assert sorted(layout_names() - existing) == []


@pytest.mark.parametrize("folder", ["plugins/image_pipeline", "spark_jobs", "tools/image_tools", "bench",
                                    "bootstrap", "conf", "mwaa"])
def test_the_layout_names_every_module_and_file_of(folder):
    prefix = PurePosixPath(folder)
    files = [p for p in tracked() if prefix in p.parents and p.name != "__init__.py"
             and not (folder == "spark_jobs" and "image_jobs" in p.parts)]  # the jobs' library: by folder
    assert files
    assert sorted({p.name for p in files} - layout_names()) == []
    sub_packages = {p.parts[len(prefix.parts)] for p in tracked() if prefix in p.parents
                    and len(p.parts) > len(prefix.parts) + 1}
    assert sorted(sub_packages - layout_names()) == []


def test_the_layout_names_every_top_level_entry():
    top = {p.parts[0] for p in tracked()} - {".gitignore", "README.md"}
    assert sorted(top - layout_names()) == []


def test_every_docs_page_is_linked_and_every_link_resolves():
    links = set(re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README))
    pages = {p.as_posix() for p in tracked() if p.parts[0] == "docs" and p.suffix in (".md", ".json")
             and len(p.parts) == 2}
    assert sorted(pages - links) == []
    assert "docs/decisions/README.md" in links
    assert sorted(link for link in links if "://" not in link and not (PROJECT_ROOT / link).exists()) == []


def test_the_checks_see_the_layout():
    assert {"wiring", "emr", "cluster.py", "predict_photos.py", "run", ".ci"} <= layout_names()


def test_the_layout_names_every_test_layer():
    layers = {p.parts[1] for p in tracked() if p.parts[0] == "tests" and len(p.parts) > 2}
    assert layers >= {"unit", "spark", "dag", "mwaa", "ui"}
    assert sorted(layers - layout_names()) == []
