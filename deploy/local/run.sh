#!/usr/bin/env bash
# A Baton cluster on this machine, on loopback: etcd, PostgreSQL, Kamailio (the edge) and N
# shards (docs/cluster.md, "On one machine"). Ctrl-C stops every process it started.
#   deploy/local/run.sh [--shards N] [--sip-port 5060] [--dir var/cluster]
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -z "${PYTHON:-}" ] && [ ! -x "${here}/.venv/bin/python" ]; then
    make -C "${here}" venv   # a fresh clone: install Baton into .venv first, as `make run` does
fi
py="${PYTHON:-${here}/.venv/bin/python}"
exec "${py}" -m baton.service.cluster.local "$@"
