"""The compose stack's Fernet key: made once, kept in the stack's data folder, read by every Airflow service.

    python -m image_tools.fernet_key /opt/airflow/data/airflow/fernet_key [--owner 50000]

Airflow encrypts connection passwords and extras (and variables) with this key before they reach Postgres
(Airflow's "Securing Connections": Fernet). ``airflow-init`` runs this before ``airflow db migrate``; the
services read the key through ``AIRFLOW__CORE__FERNET_KEY_CMD`` (``cat`` of the file), so it is in no
environment variable, log or process list. An existing key is kept: replacing it would make every stored
secret unreadable. The file is readable by its owner only.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def ensure_key(path: Path, owner: int | None = None) -> bool:
    """Write a new Fernet key to ``path`` unless a valid one is there; returns whether it wrote one."""
    from cryptography.fernet import Fernet

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text().strip():
        Fernet(path.read_text().strip().encode())  # a damaged key fails here, naming nothing secret
        written = False
    else:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(Fernet.generate_key().decode())  # no newline: Airflow takes the command output as is
        written = True
    os.chmod(path, 0o600)
    if owner is not None:
        os.chown(path, owner, 0)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="the key file")
    parser.add_argument("--owner", type=int, default=None, help="user id the Airflow services run as")
    args = parser.parse_args(argv)
    try:
        written = ensure_key(args.path, args.owner)
    except ValueError:
        print(f"error: {args.path} does not hold a valid Fernet key; restore it from a backup (replacing it "
              "makes every stored connection password unreadable)", file=sys.stderr)
        return 2
    print(f"Fernet key {'written to' if written else 'kept in'} {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
