#!/usr/bin/env bash
# Set up (if needed), start a throwaway PostgreSQL for the store tests, and run the linter and
# the whole test suite (slow, cluster, real-data and PostgreSQL tests included). Extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
GMSENSE_TEST_PG_URL=${GMSENSE_TEST_PG_URL:-$(bash scripts/start-postgres.sh)}
export GMSENSE_TEST_PG_URL
.venv/bin/ruff check gmsense tests
exec .venv/bin/python -m pytest "$@"
