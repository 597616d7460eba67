#!/usr/bin/env bash
# `make bench`: the set-up a fresh machine needs (tool chain, Docker engine, lab
# images, wrk from the distribution, matplotlib for the charts), then the bench.
#   scripts/bench.sh                  the full bench (about an hour on 2 cores)
#   scripts/bench.sh --smoke          a short run of every step (part of make test)
#   scripts/bench.sh --help           the options (sizes, repeats, loads)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
log() { printf 'bench: %s\n' "$*" >&2; }

scripts/bootstrap.sh
scripts/docker-engine.sh
scripts/lab-images.sh >/dev/null
if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk (the load tool) from the distribution"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
stamp="$root/.venv/.requirements-bench.sha256"
want=$(sha256sum requirements-bench.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing the bench's Python requirements into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt \
    2> >(grep -v '^WARNING: Location' >&2)
  printf '%s\n' "$want" >"$stamp"
fi
exec .venv/bin/python scripts/bench.py "$@"
