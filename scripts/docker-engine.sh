#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine: install docker.io from the
# distribution when dockerd is absent, start it when it is not running, and wait
# until `docker info` answers. Safe to run again and again.
set -euo pipefail

log() { printf 'docker-engine: %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing docker.io from the distribution"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi

# A systemd-managed host starts the service; a container or CI machine without
# systemd as PID 1 gets a plain background daemon.
if [ "$(ps -o comm= -p 1 2>/dev/null)" = "systemd" ] && systemctl list-unit-files docker.service >/dev/null 2>&1; then
  log "starting docker.service"
  systemctl start docker.service
else
  # Remove a stale pid file left by a daemon that was killed.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    log "starting dockerd (log: /var/log/dockerd.log)"
    nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null &
  fi
fi

for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    log "engine $(docker version --format '{{.Server.Version}}') answers"
    exit 0
  fi
  sleep 1
done
log "dockerd did not answer within 60 s; last log lines:"
tail -n 20 /var/log/dockerd.log >&2 || true
exit 1
