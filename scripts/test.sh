#!/usr/bin/env bash
# Set up (if needed) and run the linter and the whole test suite (slow, cluster and real-data
# tests included). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check gmsense tests
exec .venv/bin/python -m pytest "$@"
