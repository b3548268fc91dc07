#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: a virtual environment in .venv with gmsense, its
# dependencies (pinned by constraints.txt) and its test tools. A second run reuses it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Chinese reports need a CJK font (Debian's fonts-noto-cjk); the review app's browser tests need
# Debian's chromium. Installed when we may (root).
debs=()
[ -e /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ] || debs+=(fonts-noto-cjk)
[ -x /usr/bin/chromium ] || debs+=(chromium)
if [ ${#debs[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debs[@]}" >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.gmsense-setup
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c "import gmsense" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e '.[test,docs]'
  echo "$want" > "$stamp"
fi
