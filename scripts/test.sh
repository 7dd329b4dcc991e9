#!/usr/bin/env bash
# Install what the tests need and run them all (unit, end-to-end and browser tests).
# Usage: bash scripts/test.sh [pytest options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-dev.txt
exec .venv/bin/python -m pytest "$@"
