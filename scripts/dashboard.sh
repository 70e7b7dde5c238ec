#!/usr/bin/env bash
# Set up .venv, build the demo project on first use, and open the dashboard on it (http://127.0.0.1:8501).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/assft demo project --quiet-if-exists
exec .venv/bin/streamlit run app/main.py -- --project "${ASSFT_PROJECT:-demo_project}"
