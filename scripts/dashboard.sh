#!/usr/bin/env bash
# Install what is needed, build the synthetic demo study if there is none, and open the dashboard.
# Usage: bash scripts/dashboard.sh [extra streamlit options, e.g. --server.port 8600]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
export CNMC_ARTIFACTS="${CNMC_ARTIFACTS:-artifacts}"
if ! .venv/bin/python -m cnmc_core studies --json | .venv/bin/python -c 'import json,sys; sys.exit(0 if json.load(sys.stdin) else 1)'; then
  echo "no study yet: building the synthetic demo study (about 2-3 minutes on 2 CPU cores) ..." >&2
  .venv/bin/python -m cnmc_core demo
fi
exec .venv/bin/streamlit run app.py --server.headless true "$@"
