#!/usr/bin/env bash
# Install what the tests need, lint, and run every test (unit, end-to-end and browser tests).
# Usage: bash scripts/test.sh [pytest options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-dev.txt
# The browser tests drive Debian's Chromium through Playwright (no browser download).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing chromium for the browser tests ..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser tests will be skipped" >&2
fi
# The linter first (ruff, configured in pyproject.toml): a lint error fails the run before any test.
.venv/bin/ruff check .
# Test files run on parallel workers, one file per worker at a time (pytest-xdist), in the order
# tests/conftest.py gives them; the trained study they share is built once for all workers.
exec .venv/bin/python -m pytest -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder "$@"
