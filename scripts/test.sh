#!/usr/bin/env bash
# Install Restora with what the tests need (pytest, Playwright, Debian's Chromium) into ./.venv
# and run the whole test suite. Tests read ../shared (fixtures, detectors, photos).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
exec .venv/bin/python -m pytest -q "$@"
