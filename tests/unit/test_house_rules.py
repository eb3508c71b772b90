"""Rules of the code base that a reader relies on: short functions, no ``sys.path`` edits.

- No function of the Airflow-side package (``plugins/``) or of the Spark jobs (``spark_jobs/``) is longer
  than 50 lines: job mains and tasks read as lists of named phases.
- No two test modules have the same file name (pytest's collection would stop).
- No module under ``tests/`` imports a test module or a ``conftest.py``: fixtures live in each layer's
  ``conftest.py`` (tests/conftest.py for those several layers share), other shared code in helper modules.
- Nothing in ``plugins/``, ``dags/`` or ``spark_jobs/`` changes ``sys.path``: Airflow's loader puts
  ``dags/`` and ``plugins/`` on it, the jobs' archive is on the cluster's, and the package finds the jobs'
  library by location (``image_pipeline.shipped``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from project_paths import PROJECT_ROOT

MAX_FUNCTION_LINES = 50
SOURCES = sorted(p for folder in ("plugins", "dags", "spark_jobs") for p in (PROJECT_ROOT / folder).rglob("*.py")
                 if "__pycache__" not in p.parts)


def relative(path: Path) -> str:
    return path.relative_to(PROJECT_ROOT).as_posix()


def long_functions(tree: ast.AST) -> list[str]:
    return [f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def sys_path_edits(tree: ast.AST) -> list[int]:
    """Lines that call a method of ``sys.path`` or assign to it."""
    def is_sys_path(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                and node.value.id == "sys")

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_sys_path(node.func.value):
            lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            lines += [node.lineno for t in targets if is_sys_path(t)
                      or (isinstance(t, ast.Subscript) and is_sys_path(t.value))]
    return sorted(lines)


def imports_of_tests_or_conftest(tree: ast.AST) -> list[str]:
    """``line: module`` of every import of a test module (``test_*``) or of ``conftest``."""
    def is_test_or_conftest(name: str) -> bool:
        return name.split(".")[0].startswith("test_") or name.split(".")[0] == "conftest"

    found = []
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
        found += [f"{node.lineno}: {name}" for name in names if is_test_or_conftest(name)]
    return found


def test_the_rules_see_every_source_file():
    names = {relative(p) for p in SOURCES}
    assert {"plugins/image_pipeline/compute/backends.py", "dags/image_classification.py",
            "spark_jobs/image_jobs/predictor.py"} <= names


@pytest.mark.parametrize("path", [p for p in SOURCES if not relative(p).startswith("dags/")], ids=relative)
def test_no_function_is_longer_than_fifty_lines(path):
    assert long_functions(ast.parse(path.read_text())) == []


@pytest.mark.parametrize("path", SOURCES, ids=relative)
def test_nothing_edits_sys_path(path):
    assert sys_path_edits(ast.parse(path.read_text())) == []


def test_no_two_test_modules_share_a_name():
    """The test folders have no __init__.py and pytest imports modules by their name: two of the same name stop
    its collection ("import file mismatch"), so the whole suite would run nothing."""
    modules = sorted(p for p in (PROJECT_ROOT / "tests").rglob("test_*.py") if "__pycache__" not in p.parts)
    names = [p.name for p in modules]
    assert len(modules) > 40
    assert sorted({relative(p) for p in modules if names.count(p.name) > 1}) == []


def test_no_test_module_imports_another_or_a_conftest():
    """Pytest imports every ``conftest.py`` as the one module ``conftest``, so ``from conftest import x`` finds
    whichever layer's was loaded last; and a test module imported by another shares its fixtures by accident."""
    modules = sorted(p for p in (PROJECT_ROOT / "tests").rglob("*.py") if "__pycache__" not in p.parts)
    assert len(modules) > 60
    found = {relative(p): imports_of_tests_or_conftest(ast.parse(p.read_text())) for p in modules}
    assert {path: imports for path, imports in found.items() if imports} == {}


def test_the_checks_find_what_they_look_for():
    def function(lines: int) -> str:
        return "def f():\n" + "".join(f"    x = {i}\n" for i in range(lines - 1))

    assert long_functions(ast.parse(function(MAX_FUNCTION_LINES + 1))) == ["f (51 lines, line 1)"]
    assert long_functions(ast.parse(function(MAX_FUNCTION_LINES))) == []
    edits = "import sys\nsys.path.insert(0, 'x')\nsys.path.append('y')\nsys.path = []\nsys.path[0] = 'z'\n"
    assert sys_path_edits(ast.parse(edits)) == [2, 3, 4, 5]
    assert sys_path_edits(ast.parse("import sys\nprint(sys.path)\nfrom os import path\npath.join('a')\n")) == []
    imports = ("from test_emr_dag import aws\nimport test_report\nfrom conftest import PROJECT_ROOT\n"
               "def f():\n    import conftest\n")
    assert imports_of_tests_or_conftest(ast.parse(imports)) == ["1: test_emr_dag", "2: test_report", "3: conftest",
                                                       "5: conftest"]
    fine = "from fake_aws import BUCKET\nimport pytest\nfrom . import test_x\nfrom tests_data import y\n"
    assert imports_of_tests_or_conftest(ast.parse(fine)) == []
