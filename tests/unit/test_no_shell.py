"""No label, param or path ever reaches a shell: every command is an argument list.

A static guard over the code that builds and runs commands (the Airflow side, the DAG, the Spark
jobs); the DAG end-to-end run with hostile class names (tests/dag/test_hostile_labels.py) is the
dynamic proof.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from project_paths import PROJECT_ROOT

GUARDED = ("plugins", "dags", "spark_jobs")
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"),
               ("asyncio", "create_subprocess_shell")}
SHELL_OPERATORS = ("BashOperator", "bash_operator", "SSHOperator")


def shell_uses(source: str, filename: str = "<source>") -> list[str]:
    """Where ``source`` runs a shell: shell=True, os.system/popen, subprocess.getoutput, Bash operators."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(f"{where} shell={ast.unparse(kw.value)}")
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and (
                    (func.value.id, func.attr) in SHELL_CALLS):
                found.append(f"{where} {func.value.id}.{func.attr}()")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (node.module, alias.name) in SHELL_CALLS:
                    found.append(f"{where} from {node.module} import {alias.name}")
            if any(name in (node.module or "") or any(name == a.name for a in node.names) for name in SHELL_OPERATORS):
                found.append(f"{where} imports a shell operator from {node.module}")
    return found


def python_files() -> list[Path]:
    return sorted(p for folder in GUARDED for p in (PROJECT_ROOT / folder).rglob("*.py"))


def test_guarded_code_never_uses_a_shell():
    files = python_files()
    assert len(files) > 20  # the guard looks at the real code base
    found = [use for path in files for use in shell_uses(path.read_text(), str(path.relative_to(PROJECT_ROOT)))]
    assert found == []


@pytest.mark.parametrize("source", [
    "import subprocess\nsubprocess.run(cmd, shell=True)",
    "import subprocess\nsubprocess.Popen(cmd, shell=flag)",
    "import os\nos.system('spark-submit ' + label)",
    "import os\nos.popen(cmd)",
    "from os import system",
    "import subprocess\nsubprocess.getoutput(cmd)",
    "from airflow.providers.standard.operators.bash import BashOperator",
])
def test_the_guard_catches_each_kind_of_shell_use(source):
    assert shell_uses(source)


def test_the_guard_accepts_argument_lists():
    assert shell_uses("import subprocess\nsubprocess.run(['spark-submit', label], shell=False)\n"
                      "subprocess.Popen(argv, start_new_session=True)") == []
