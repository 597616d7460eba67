#!/usr/bin/env bash
# Install the controller tool chain into ./.venv (pinned in requirements.txt)
# and the pinned collections of requirements.yml into ./.collections, without
# Ansible Galaxy. Does nothing when both are already current.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
log() { printf 'bootstrap: %s\n' "$*" >&2; }

# ansible-core 2.21 needs Python >= 3.12: take the newest one available.
find_python() {
  local candidates=("${PYTHON:-}" python3.13 python3.12)
  if command -v pyenv >/dev/null 2>&1; then
    local proot
    proot=$(pyenv root)
    local minor
    for minor in 3.13 3.12; do
      candidates+=("$(printf '%s\n' "$proot"/versions/"$minor"*/bin/python3 | sort -V | tail -n 1)")
    done
  fi
  candidates+=(python3)
  local c
  for c in "${candidates[@]}"; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}

stamp="$venv/.requirements.sha256"
want=$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python=$(find_python) || {
    log "no Python >= 3.12 found (tried \$PYTHON, python3.13, python3.12, pyenv, python3)"
    exit 1
  }
  log "creating $venv with $python"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  # pip warns about each absent local index folder; keep the real errors only.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$root/requirements.txt" 2> >(grep -v '^WARNING: Location' >&2)
  printf '%s\n' "$want" >"$stamp"
fi

"$venv/bin/python" "$root/scripts/install_collections.py" \
  --requirements "$root/requirements.yml" --dest "$root/.collections" \
  --cache "$root/.cache/collections"
