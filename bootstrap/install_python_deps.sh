#!/bin/bash
# EMR bootstrap action: install the Spark jobs' pinned Python dependencies for the nodes' Python 3.11,
# offline, from the wheelhouse staged next to the code, so nodes in private subnets without NAT need no PyPI.
# Usage (set by the DAG):
#   install_python_deps.sh s3://<bucket>/<prefix>/artifacts/wheelhouse-<requirements hash> \
#                          s3://<bucket>/<prefix>/artifacts/<hash>/requirements-emr.txt
# Steps: the interpreter and its pip (from dnf when missing), the wheelhouse and the requirements from S3,
# the wheelhouse checked against its manifest, pip install --no-index from it, pip check, an import
# check, the installed versions printed. Downloads are retried; any failure exits non-zero, which fails
# the bootstrap and so the cluster, loudly.
set -euo pipefail
USAGE="usage: install_python_deps.sh <s3 URI of the wheelhouse> <s3 URI of requirements-emr.txt>"
WHEELHOUSE_URI="${1:?$USAGE}"
REQUIREMENTS_URI="${2:?$USAGE}"
PYTHON="${BOOTSTRAP_PYTHON:-/usr/bin/python3.11}"
ATTEMPTS=4
RETRY_SECONDS="${BOOTSTRAP_RETRY_SECONDS:-15}"
WORK_DIR="$(mktemp -d -t python-deps.XXXXXX)"
WHEELHOUSE="$WORK_DIR/wheelhouse"
REQUIREMENTS="$WORK_DIR/requirements-emr.txt"
trap 'echo "bootstrap: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'rm -rf "$WORK_DIR"' EXIT

retry() {
  local attempt=1
  until "$@"; do
    if [ "$attempt" -ge "$ATTEMPTS" ]; then
      echo "bootstrap: '$*' failed $ATTEMPTS times, giving up" >&2
      return 1
    fi
    echo "bootstrap: '$*' failed (attempt $attempt/$ATTEMPTS), retrying in $((attempt * RETRY_SECONDS)) s" >&2
    sleep $((attempt * RETRY_SECONDS))
    attempt=$((attempt + 1))
  done
}

# Amazon Linux 2023 may have the interpreter without its pip: both are needed
if ! "$PYTHON" -m pip --version > /dev/null 2>&1; then
  echo "bootstrap: $PYTHON or its pip is missing: installing python3.11 and python3.11-pip"
  retry sudo dnf install -y python3.11 python3.11-pip
fi
PIP_VERSION="$("$PYTHON" -m pip --version)"  # fails the bootstrap when dnf did not provide pip either
echo "bootstrap: $PIP_VERSION"

retry aws s3 cp --recursive --only-show-errors "$WHEELHOUSE_URI" "$WHEELHOUSE"
retry aws s3 cp --only-show-errors "$REQUIREMENTS_URI" "$REQUIREMENTS"
# an empty or half-staged prefix downloads without error: the manifest says what must be there
"$PYTHON" - "$WHEELHOUSE" "$REQUIREMENTS" "$WHEELHOUSE_URI" "$REQUIREMENTS_URI" <<'CHECK'
import hashlib, json, pathlib, sys
folder, requirements, uri, requirements_uri = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), *sys.argv[3:]
if not (folder / "manifest.json").is_file():
    sys.exit(f"bootstrap: no manifest.json under {uri}: the wheelhouse was not staged (completely)")
manifest = json.loads((folder / "manifest.json").read_text())
if manifest["requirements_hash"] != hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]:
    sys.exit(f"bootstrap: the wheelhouse {uri} was built for other requirements than {requirements_uri}")
def sha256(path):
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()
bad = [w["file"] for w in manifest["wheels"]
       if not (folder / w["file"]).is_file() or sha256(folder / w["file"]) != w["sha256"]]
if bad:
    sys.exit(f"bootstrap: missing or damaged wheels from {uri}: {', '.join(bad)}")
print(f"bootstrap: wheelhouse {uri}: {len(manifest['wheels'])} wheels, all as in its manifest")
CHECK
sudo "$PYTHON" -m pip install --no-index --find-links "$WHEELHOUSE" --no-cache-dir --quiet \
  --disable-pip-version-check -r "$REQUIREMENTS"
sudo "$PYTHON" -m pip check
"$PYTHON" -c "import tensorflow, keras, openvino, sklearn, PIL, pyarrow, pandas, matplotlib; print('bootstrap: python deps ok')"
"$PYTHON" - "$REQUIREMENTS" <<'VERSIONS'
import importlib.metadata, re, sys
for line in open(sys.argv[1]):
    name = re.split(r"[=<>!~;\[\s]", line.split("#")[0].strip())[0]
    if name:
        print(f"bootstrap: installed {name}=={importlib.metadata.version(name)}")
VERSIONS
