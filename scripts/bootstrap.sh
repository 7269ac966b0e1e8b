#!/usr/bin/env bash
# Create .venv with a Python >= 3.12 and install helicone-addon into it.
#   bash scripts/bootstrap.sh          # runtime only
#   bash scripts/bootstrap.sh test     # + test dependencies (pytest, openai, anthropic, hypothesis, ...)
#   bash scripts/bootstrap.sh test,ui  # + datasette for `helicone-addon ui`
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

find_python() {
  local c v
  for c in "${PYTHON:-}" python3.13 python3.12 python3 \
           "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3 /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null 2>&1 || [ -x "$c" ] || continue
    v=$("$c" -c 'import sys; print(int(sys.version_info >= (3, 12)))' 2>/dev/null) || continue
    if [ "$v" = 1 ]; then echo "$c"; return 0; fi
  done
  return 1
}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
  py=$(find_python) || { echo "bootstrap: no Python >= 3.12 found (set PYTHON=/path/to/python3.12)" >&2; exit 1; }
  echo "bootstrap: creating .venv with $py ($("$py" --version))"
  rm -rf .venv
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c 'import helicone_addon, mitmproxy' || { echo "bootstrap: install failed" >&2; exit 1; }
echo "bootstrap: ready (.venv/bin/helicone-addon)"
