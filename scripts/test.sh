#!/usr/bin/env bash
# The whole test suite, from a fresh machine: tool chain, Docker engine, lab
# images, then lint, unit tests and every molecule scenario. Ends with one
# summary line over all test results: "summary: N passed, N failed, N skipped".
#   scripts/test.sh               everything but the bench (lint, unit, molecule)
#   scripts/test.sh lint unit     only some stages (lint, unit, molecule, bench)
#   scripts/test.sh bench         the bench's short run (make bench-smoke, ~11 min)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PY_COLORS=0 NO_COLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1
results="$root/.cache/test-results"
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(lint unit molecule)

log() { printf '\n==> %s\n' "$*" >&2; }
wants() { [[ " ${stages[*]} " == *" $1 "* ]]; }
# A failing step is reported and the run goes on, so that every stage runs and
# the summary line is always printed; the exit status says whether all passed.
failed_steps=()
step() { "$@" || { failed_steps+=("$*"); printf '\n!!! failed: %s\n' "$*" >&2; }; }

# nginx for the unit tests' `nginx -t` on rendered configurations; installed
# without starting its service.
ensure_nginx() {
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] && return 0
  log "installing nginx (for nginx -t)"
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' RETURN
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
}

rm -rf "$results"
mkdir -p "$results"
scripts/bootstrap.sh
# shellcheck disable=SC1091
. "$root/.venv/bin/activate"

if wants lint; then
  log "lint: yamllint, ansible-lint (production profile), ruff, syntax check"
  step yamllint --strict .
  step ansible-lint
  step ruff check .
  step ruff format --check .
  step ansible-playbook -i inventory.example site.yml --syntax-check
fi

if wants unit; then
  log "unit tests"
  ensure_nginx
  step pytest tests/unit --junitxml="$results/unit.xml"
fi

if wants molecule; then
  scripts/docker-engine.sh
  scripts/lab-images.sh >/dev/null
  log "stand-in node stack: self-test against CONTRACT.md"
  step python tests/images/selftest.py --prefix ai-fleet-selftest-
  for scenario in molecule/*/molecule.yml; do
    name=$(basename "$(dirname "$scenario")")
    log "molecule scenario: $name"
    step molecule test --scenario-name "$name"
  done
fi

# The bench is not a timed test; its short run proves that `make bench` works.
if wants bench; then
  log "bench: a short run of every step (scripts/bench.sh --smoke)"
  step scripts/bench.sh --smoke --results "$root/.cache/bench-smoke" --junit "$results/bench.xml"
fi

if [ ${#failed_steps[@]} -gt 0 ]; then
  printf '\nfailed steps:\n' >&2
  printf '  %s\n' "${failed_steps[@]}" >&2
fi
# A failed step with no test report of its own (lint, a scenario that broke
# before its verifier) counts as one failure in the summary.
python scripts/test_summary.py "$results" --failed-steps "${#failed_steps[@]}"
