#!/usr/bin/env bash
# promtool (Prometheus' own checker of configurations and alert rules, and
# runner of their unit tests) for the tests, from the distribution's prometheus
# package: unpacked into .cache/prometheus, never installed (no service, no
# user, nothing outside the repository). Prints the path of promtool.
#   scripts/promtool.sh            unpack when absent, print the path
# The tests find it there (tests/unit/test_monitoring_rules.py); a promtool on
# PATH is used as it is.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.cache/prometheus"
tool="$dest/usr/bin/promtool"

log() { printf 'promtool: %s\n' "$*" >&2; }

if command -v promtool >/dev/null 2>&1; then
  command -v promtool
  exit 0
fi
if [ -x "$tool" ]; then
  printf '%s\n' "$tool"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download prometheus >/dev/null 2>&1; then
  log "refreshing the package lists"
  apt-get update -qq
  apt-get download prometheus >/dev/null
fi
mkdir -p "$dest"
dpkg-deb -x prometheus_*.deb "$work/pkg"
install -D -m 0755 "$work/pkg/usr/bin/promtool" "$tool"
log "unpacked $(basename prometheus_*.deb) into $dest"
printf '%s\n' "$tool"
