#!/usr/bin/env bash
# Installs Restora and everything its tests need into ./.venv (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# CPU torch first: pinning it here keeps pip from pulling the CUDA build and its packages.
.venv/bin/python -m pip install -q "torch==${RESTORA_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e '.[test,fast,identity]'
# Chromium for the web page end-to-end test (Debian packages; skipped when present or not root).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the web page test will fail" >&2
  fi
fi
# PostgreSQL and Redis for the multi-node tests (tests/service/test_cluster.py starts its own
# servers on 127.0.0.1 from these binaries; the system services need not run).
if ! command -v redis-server >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null) \
      || echo "warning: could not install postgresql/redis-server; the cluster tests will fail" >&2
  fi
fi
echo "restora installed in .venv"
