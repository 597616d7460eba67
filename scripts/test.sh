#!/usr/bin/env bash
# The whole test suite, from a fresh machine: tool chain, Docker engine, lab
# images, then lint, unit tests and every molecule scenario. Ends with one
# summary line over all results: "summary: N passed, N failed, N skipped"
# (each lint check counts as one test).
#   scripts/test.sh               everything but the bench (lint, unit, molecule)
#   scripts/test.sh lint unit     only some stages (lint, unit, molecule, bench)
#   scripts/test.sh check         the inner loop: fast lint and the unit tests
#                                 that run no playbook (under a minute)
#   scripts/test.sh bench         the bench's short run (make bench-smoke, ~11 min)
# What it may install on this machine: nginx (for the unit tests' nginx -t;
# its service is not started; promtool is only unpacked into .cache), Docker Engine (scripts/docker-engine.sh) and the
# tools of scripts/base-image.sh and the fixture repository's build.sh.
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
# A check that writes no test report of its own (lint) is recorded as one
# test case in lint.xml: it counts in the summary, passed or failed.
lint_cases=()
failed_checks=()
check() {
  local name=$1 start status=0
  shift
  start=$(date +%s)
  "$@" || status=$?
  lint_cases+=("$name|$status|$(( $(date +%s) - start ))")
  [ "$status" -eq 0 ] || { failed_checks+=("$*"); printf '\n!!! failed: %s\n' "$*" >&2; }
  return 0
}
write_lint_report() {
  [ ${#lint_cases[@]} -gt 0 ] || return 0
  python3 scripts/test_summary.py --write-junit "$results/lint.xml" "${lint_cases[@]}"
}

# nginx for the unit tests' `nginx -t` on rendered configurations, installed
# without starting its service. A policy-rc.d of the machine's own is left as
# it was; one written here is removed again.
ensure_nginx() {
  { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } && return 0
  log "installing nginx (for nginx -t)"
  local policy=/usr/sbin/policy-rc.d ours=false
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    ours=true
  fi
  local status=0
  DEBIAN_FRONTEND=noninteractive apt-get update -qq || status=$?
  [ "$status" -ne 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null \
    || status=$?
  [ "$ours" = false ] || rm -f "$policy"
  return "$status"
}

# promtool for the alert rules' tests, unpacked from the distribution's
# prometheus package into .cache (scripts/promtool.sh); nothing is installed.
ensure_promtool() {
  scripts/promtool.sh >/dev/null
}

shell_scripts() {
  git ls-files '*.sh'
}

rm -rf "$results"
mkdir -p "$results"
# Without the tool chain nothing else can run: this step alone ends the run.
if ! scripts/bootstrap.sh; then
  python3 scripts/test_summary.py "$results" --failed-steps 1
  exit 1
fi
# shellcheck disable=SC1091
. "$root/.venv/bin/activate"

if wants check; then
  log "check: yamllint, ruff, shellcheck, and the unit tests that run no playbook"
  check yamllint yamllint --strict .
  check ruff ruff check .
  check ruff-format ruff format --check .
  # shellcheck disable=SC2046
  check shellcheck shellcheck $(shell_scripts)
  step ensure_promtool
  step pytest -q -n auto -m "not playbook" tests/unit --junitxml="$results/unit-fast.xml"
fi

if wants lint; then
  log "lint: yamllint, ansible-lint (production profile), ruff, shellcheck, syntax check"
  check yamllint yamllint --strict .
  check ansible-lint ansible-lint
  check ruff ruff check .
  check ruff-format ruff format --check .
  # shellcheck disable=SC2046
  check shellcheck shellcheck $(shell_scripts)
  check syntax-check ansible-playbook -i inventory.example site.yml --syntax-check
fi

if wants unit; then
  log "unit tests"
  step ensure_nginx
  step ensure_promtool
  # One process: the nginx reload tests time real reloads, and a second worker
  # beside them on a 2-core machine makes them flaky.
  step pytest tests/unit --junitxml="$results/unit.xml"
fi

if wants molecule; then
  if step scripts/docker-engine.sh && step scripts/lab-images.sh >/dev/null; then
    log "stand-in node stack: self-test against the service contract (docs/services.md)"
    step python tests/images/selftest.py --prefix ai-fleet-selftest-
    for scenario in molecule/*/molecule.yml; do
      name=$(basename "$(dirname "$scenario")")
      log "molecule scenario: $name"
      step molecule test --scenario-name "$name"
    done
  fi
fi

# The bench is not a timed test; its short run proves that `make bench` works.
if wants bench; then
  if step scripts/docker-engine.sh && step scripts/lab-images.sh >/dev/null; then
    log "bench: a short run of every step (scripts/bench.sh --smoke)"
    step scripts/bench.sh --smoke --results "$root/.cache/bench-smoke" --junit "$results/bench.xml"
  fi
fi

write_lint_report
if [ $(( ${#failed_steps[@]} + ${#failed_checks[@]} )) -gt 0 ]; then
  printf '\nfailed:\n' >&2
  printf '  %s\n' "${failed_checks[@]}" "${failed_steps[@]}" >&2
fi
# A failed step with no test report of its own (a scenario that broke before
# its verifier, a set-up step) counts as one failure; a lint check is in lint.xml.
python scripts/test_summary.py "$results" --failed-steps "${#failed_steps[@]}"
