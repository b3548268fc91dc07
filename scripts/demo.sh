#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default: synthetic imagery over the
# bundled demo licences, a SQLite store and a GeoJSON export in demo-output/ (or --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/gmsense demo "$@"
