#!/usr/bin/env bash
# Create .venv with a Python >= 3.12 and install helicone-addon into it.
#   bash scripts/bootstrap.sh          # runtime only
#   bash scripts/bootstrap.sh test     # + test dependencies (pytest, openai, anthropic, litellm, ...)
#   bash scripts/bootstrap.sh test,ui  # + datasette for `helicone-addon ui`
#   bash scripts/bootstrap.sh --find-python   # only print the Python it would use (exit 1 if none)
#   PYTHON=/path/to/python3.12 bash scripts/bootstrap.sh ...   # use that one
#
# Where it looks, in order: $PYTHON; every python3.N / python3 / python on PATH (a pyenv or asdf shim
# that fails is skipped, and the next one on PATH is tried); pyenv's versions (`pyenv root`,
# $PYENV_ROOT, ~/.pyenv, the root above a shims directory on PATH); `uv python find`; /usr/local/bin, /usr/bin, /opt/homebrew/bin, ~/.local/bin.
# Within each place 3.12 (the version the tests run on) comes before newer ones.
set -euo pipefail

MIN_MINOR=12  # Python 3.12 or newer

# Succeeds when "$1" runs and is a Python >= 3.MIN_MINOR.
py_ok() {
  [ -n "$1" ] && [ -x "$1" ] || return 1
  "$1" -c "import sys; sys.exit(0 if sys.version_info >= (3, $MIN_MINOR) else 1)" >/dev/null 2>&1
}

candidates() {
  local name dir root
  # PATH, every match of every name (not only the first: a broken shim may shadow a good Python)
  for name in python3.12 python3.13 python3.14 python3.15 python3 python; do
    type -ap "$name" 2>/dev/null || true
  done
  # pyenv, wherever its root is (also: the parent of a shims directory on PATH)
  {
    if command -v pyenv >/dev/null 2>&1; then pyenv root 2>/dev/null || true; fi
    [ -n "${PYENV_ROOT:-}" ] && echo "$PYENV_ROOT"
    echo "$HOME/.pyenv"
    local IFS=:
    for dir in $PATH; do
      case "$dir" in */shims) echo "${dir%/shims}" ;; esac
    done
  } | while read -r root; do
    [ -d "$root/versions" ] || continue
    for dir in "$root"/versions/3.*; do
      [ -x "$dir/bin/python3" ] && printf '%s\t%s\n' "${dir##*/}" "$dir/bin/python3"
    done | sort -V -k1,1 | cut -f2
  done
  # uv-managed interpreters
  if command -v uv >/dev/null 2>&1; then uv python find ">=3.$MIN_MINOR" 2>/dev/null || true; fi
  # common install prefixes
  for dir in /usr/local/bin /usr/bin /opt/homebrew/bin "$HOME/.local/bin"; do
    for name in python3.12 python3.13 python3.14 python3.15 python3; do
      [ -e "$dir/$name" ] && echo "$dir/$name"
    done
  done
  return 0
}

find_python() {
  local c
  if [ -n "${PYTHON:-}" ]; then
    c=$(command -v "$PYTHON" 2>/dev/null || echo "$PYTHON")
    if py_ok "$c"; then echo "$c"; return 0; fi
    echo "bootstrap: PYTHON=$PYTHON is not a working Python >= 3.$MIN_MINOR" >&2
    return 1
  fi
  while IFS= read -r c; do
    if py_ok "$c"; then echo "$c"; return 0; fi
  done < <(candidates)
  cat >&2 <<EOF
bootstrap: no working Python >= 3.$MIN_MINOR found (looked on PATH, in pyenv's versions, with uv and in
/usr/local/bin, /usr/bin, /opt/homebrew/bin, ~/.local/bin).
Point it at one:   PYTHON=/path/to/python3.12 bash scripts/bootstrap.sh${extras:+ $extras}
or install one, e.g. 'uv python install 3.12' or 'pyenv install 3.12'.
EOF
  return 1
}

cd "$(dirname "$0")/.."
extras="${1:-}"
if [ "$extras" = "--find-python" ]; then
  extras=""
  find_python
  exit
fi

if [ ! -x .venv/bin/python ] || ! py_ok .venv/bin/python; then
  py=$(find_python) || exit 1
  echo "bootstrap: creating .venv with $py ($("$py" --version 2>&1))"
  rm -rf .venv
  "$py" -m venv .venv || {
    echo "bootstrap: '$py -m venv' failed (on Debian/Ubuntu: apt install python3.${MIN_MINOR}-venv; or pick another with PYTHON=...)" >&2
    exit 1
  }
fi

# pip's own chatter (location warnings, deprecation notices) is noise here; errors still show.
quiet_pip() {
  local out rc=0
  out=$(.venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1) || rc=$?
  [ -z "$out" ] || printf '%s\n' "$out" | grep -v -e "^WARNING: Location" -e "^DEPRECATION:" || true
  return $rc
}
quiet_pip --upgrade pip || echo "bootstrap: could not upgrade pip; going on with $(.venv/bin/python -m pip --version)" >&2
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
quiet_pip -e "$spec" || { echo "bootstrap: pip install -e '$spec' failed" >&2; exit 1; }
.venv/bin/python -c 'import helicone_addon, mitmproxy' || { echo "bootstrap: install failed" >&2; exit 1; }
# The proxy runs under `python -O`: compile what it imports for -O once, here. (Without it, and with
# PYTHONDONTWRITEBYTECODE set, every start would compile mitmproxy again: seconds of startup.)
env -u PYTHONDONTWRITEBYTECODE .venv/bin/python -O -c \
  'import sys; from helicone_addon.cli.proxy import precompile_optimized as p; sys.exit(p())' \
  || echo "bootstrap: could not compile for python -O; the proxy runs without -O" >&2
echo "bootstrap: ready (.venv/bin/helicone-addon; .venv/bin holds sqlite-utils and the other tools)"
