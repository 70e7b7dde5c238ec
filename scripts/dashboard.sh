#!/usr/bin/env bash
# Set up .venv, build the demo project on first use, and open the dashboard on it (http://127.0.0.1:8501).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Another project: ASSFT_PROJECT=DIR (the demo project is then not built); another port:
# STREAMLIT_SERVER_PORT=N.
if [ -z "${ASSFT_PROJECT:-}" ]; then
  .venv/bin/assft demo project --quiet-if-exists
fi
# The safe server options on the command line (app/safety.py), so they hold whatever the folder.
exec .venv/bin/python -m app.safety --project "${ASSFT_PROJECT:-demo_project}"
