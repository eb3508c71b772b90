#!/bin/bash
# EMR bootstrap action: install the Spark jobs' pinned Python dependencies for the nodes' Python 3.11.
# Usage (set by the DAG): install_python_deps.sh s3://<bucket>/<prefix>/artifacts/<hash>/requirements-emr.txt
# Retries each step; any failure exits non-zero, which fails the bootstrap and so the cluster, loudly.
set -euo pipefail
REQUIREMENTS_URI="${1:?usage: install_python_deps.sh <s3 URI of requirements-emr.txt>}"
PYTHON="${BOOTSTRAP_PYTHON:-/usr/bin/python3.11}"
ATTEMPTS=4
RETRY_SECONDS="${BOOTSTRAP_RETRY_SECONDS:-15}"

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

if [ ! -x "$PYTHON" ]; then
  retry sudo dnf install -y python3.11 python3.11-pip
fi
retry aws s3 cp "$REQUIREMENTS_URI" /tmp/requirements-emr.txt
retry sudo "$PYTHON" -m pip install --quiet --no-cache-dir -r /tmp/requirements-emr.txt
sudo "$PYTHON" -m pip check
"$PYTHON" -c "import tensorflow, keras, sklearn, PIL, pyarrow, pandas, matplotlib; print('bootstrap: python deps ok')"
