"""The Amazon MWAA bundle: what goes to the environment's S3 bucket, laid out as MWAA reads it.

    make mwaa-bundle MWAA_SETTINGS=mwaa/settings.env
    (= PYTHONPATH=plugins:tools .venv/bin/python -m image_tools.mwaa_bundle --settings mwaa/settings.env)

writes ``dist/mwaa/``:

- ``dags/``: the two DAG files, for the environment's DAGs folder (``s3://<bucket>/dags/``);
- ``plugins.zip``: the Airflow-side package ``image_pipeline/`` with the Spark jobs' sources and the EMR
  bootstrap inside it, in the folder of its package ``image_pipeline.shipped`` (``image_pipeline/shipped/
  spark_jobs/`` and ``bootstrap/`` next to its ``__init__.py``, which finds them there), and
  ``.airflowignore`` at its root; MWAA unpacks it into its plugins folder;
- ``requirements.txt``: ``requirements/mwaa.txt``, generated from ``pyproject.toml``'s ``mwaa`` extra (MWAA
  installs it with its constraints; it must not conflict with MWAA's essential constraints either,
  ``mwaa/mwaa-3.3.1-essential-constraints.txt``: ``make check-locks`` resolves it under both);
- ``startup.sh``: exports the ``IMAGE_PIPELINE_*`` settings of the settings file for every component.

The zip is reproducible (sorted entries, fixed timestamps): the same sources give the same bytes. Nothing
else goes in: no tests, data, caches or virtual environments.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import zipfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "image_pipeline"
DAG_FILES = ("image_classification.py", "image_scoring.py")
BOOTSTRAP_FILES = ("install_python_deps.sh", "requirements-emr.txt")
REQUIREMENTS = "requirements/mwaa.txt"
SETTINGS_PREFIX = "IMAGE_PIPELINE_"
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)


class BundleError(ValueError):
    """A settings file the bundle cannot carry; the message names the line."""


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def plugins_entries(root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """Archive name -> source file of every entry of plugins.zip."""
    entries = {".airflowignore": root / "plugins" / ".airflowignore"}
    package = root / "plugins" / PACKAGE
    entries.update({p.relative_to(package.parent).as_posix(): p for p in _sources(package)})
    jobs = root / "spark_jobs"
    entries.update({f"{PACKAGE}/shipped/spark_jobs/{p.relative_to(jobs).as_posix()}": p for p in _sources(jobs)})
    entries.update({f"{PACKAGE}/shipped/bootstrap/{name}": root / "bootstrap" / name for name in BOOTSTRAP_FILES})
    return dict(sorted(entries.items()))


def write_plugins_zip(target: Path, root: Path = PROJECT_ROOT) -> Path:
    """Write plugins.zip reproducibly; the bootstrap script keeps its executable bit."""
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, source in plugins_entries(root).items():
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.external_attr = (0o755 if name.endswith(".sh") else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, source.read_bytes())
    partial.replace(target)
    return target


def read_settings(path: Path | None) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, blank lines); only ``IMAGE_PIPELINE_*`` keys, each once."""
    if path is None:
        return {}
    if not path.is_file():
        raise BundleError(f"settings file {path} does not exist: copy mwaa/settings.env.example to it and edit it")
    settings: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if not sep or not key.startswith(SETTINGS_PREFIX) or not key.replace("_", "").isalnum():
            raise BundleError(f"{path}:{number}: expected IMAGE_PIPELINE_<NAME>=<value>, got {raw!r}")
        if key in settings:
            raise BundleError(f"{path}:{number}: {key} is set twice")
        settings[key] = value.strip().strip("'\"")
    return settings


def check_settings(settings: dict[str, str]) -> None:
    """The settings must be what the DAGs accept at parse time on MWAA: the EMR backend, an s3:// root."""
    from image_pipeline.compute.emr.requests import load_emr_settings
    from image_pipeline.wiring.settings import load_settings

    merged = {"IMAGE_PIPELINE_COMPUTE": "emr", **settings}
    loaded = load_settings(merged)
    if loaded.compute != "emr" or not loaded.root_uri.startswith("s3://"):
        raise BundleError(f"on MWAA the backend is emr with an s3:// root: got IMAGE_PIPELINE_COMPUTE="
                          f"{loaded.compute!r}, IMAGE_PIPELINE_ROOT_URI={loaded.root_uri!r}")
    load_emr_settings(merged)


def startup_script(settings: dict[str, str]) -> str:
    """The MWAA startup script: one ``export`` per setting, the EMR backend always."""
    merged = {"IMAGE_PIPELINE_COMPUTE": "emr", **settings}
    lines = ["#!/bin/sh", "# Amazon MWAA startup script (written by make mwaa-bundle): the image pipeline's settings",
             "# for the scheduler, the workers and the DAG processor."]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in merged.items()]
    return "\n".join(lines) + "\n"


def build_bundle(out: Path, settings_file: Path | None = None, root: Path = PROJECT_ROOT) -> Path:
    """Write the bundle into ``out`` (replacing an earlier one) and return it."""
    settings = read_settings(settings_file)
    check_settings(settings)
    if out.exists():
        shutil.rmtree(out)
    (out / "dags").mkdir(parents=True)
    for name in DAG_FILES:
        shutil.copy2(root / "dags" / name, out / "dags" / name)
    write_plugins_zip(out / "plugins.zip", root)
    shutil.copy2(root / REQUIREMENTS, out / "requirements.txt")
    (out / "startup.sh").write_text(startup_script(settings))
    (out / "startup.sh").chmod(0o755)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the Amazon MWAA bundle (dags/, plugins.zip, ...).")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "dist" / "mwaa")
    parser.add_argument("--settings", type=Path, default=None,
                        help="IMAGE_PIPELINE_*=value lines for the startup script (e.g. mwaa/settings.env)")
    args = parser.parse_args(argv)
    print(build_bundle(args.out, args.settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
