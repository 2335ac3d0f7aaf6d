#!/usr/bin/env bash
# The post-processing chain, leaf and parent result shards -> one validated submission: a wrapper of
# util.post.pipeline (options: scripts/postprocess.sh --help). The interpreter is --python PY (first
# argument), else $PYTHON, else the repository's .venv/bin/python, else python.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python}
[ -z "${PYTHON:-}" ] && [ -x "$repo/.venv/bin/python" ] && PY=$repo/.venv/bin/python
if [ "${1:-}" = --python ]; then PY=$2; shift 2; fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m util.post.pipeline "$@"
