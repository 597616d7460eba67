#!/usr/bin/env bash
# Build the lab's base image (Debian bookworm with systemd, Python and an SSH
# server, as a server has) from the
# machine's configured apt mirror, without any container registry.
#
# The image is tagged with a hash of this recipe: it is rebuilt only when the
# recipe changes, and `latest` always points at the current build.
#
#   scripts/base-image.sh            build when absent, print the image name
#   LAB_BASE_IMAGE=name scripts/...  use another repository name
set -euo pipefail

repo="${LAB_BASE_IMAGE:-ai-fleet-lab/base}"
suite="bookworm"
packages="python3,python3-apt,systemd,systemd-sysv,dbus,sudo,iproute2,ca-certificates,curl,gnupg,procps,iputils-ping,less,openssh-server"

log() { printf 'base-image: %s\n' "$*" >&2; }

recipe_hash=$( { cat "$0"; printf '%s\n' "$suite" "$packages"; } | sha256sum | cut -c1-12)
image="$repo:$recipe_hash"

if docker image inspect "$image" >/dev/null 2>&1; then
  docker tag "$image" "$repo:latest"
  printf '%s\n' "$image"
  exit 0
fi

# The mirror is whatever this machine's apt uses; it is read at run time and
# never written into the repository.
sources=/etc/apt/sources.list.d/debian.sources
mirror=""
if [ -f "$sources" ]; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' "$sources")
elif [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)
fi
if [ -z "$mirror" ]; then
  log "cannot find the apt mirror in $sources or /etc/apt/sources.list"
  exit 1
fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
  log "installing mmdebstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi

log "building $image from the configured mirror (about a minute)"
# Customize hooks:
# - leave no trace of the build host (resolv.conf, hostname, machine-id);
# - use the same apt sources as this machine (updates and security included);
# - an apt update-success stamp with mtime 0, refreshed by every successful
#   `apt-get update`, so that Ansible's `cache_valid_time` sees the empty
#   package lists of a fresh image as stale instead of skipping the update;
# - mask units that cannot work inside a container;
# - no SSH host keys in the image: each host makes its own when sshd first
#   starts, so that every lab host has keys of its own, as servers do.
# The hooks are shell text that mmdebstrap runs with the image's root as $1:
# single-quoted on purpose.
# shellcheck disable=SC2016
mmdebstrap --quiet --variant=minbase --include="$packages" \
  --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"; : > "$1/etc/machine-id"' \
  --customize-hook="if [ -f $sources ]; then rm -f \"\$1/etc/apt/sources.list\"; cp $sources \"\$1/etc/apt/sources.list.d/\"; fi" \
  --customize-hook='mkdir -p "$1/var/lib/apt/periodic" && touch -d @0 "$1/var/lib/apt/periodic/update-success-stamp"' \
  --customize-hook='echo "APT::Update::Post-Invoke-Success {\"touch /var/lib/apt/periodic/update-success-stamp 2>/dev/null || true\";};" > "$1/etc/apt/apt.conf.d/15update-stamp"' \
  --customize-hook='for u in getty@tty1.service console-getty.service systemd-udevd.service systemd-udev-trigger.service systemd-modules-load.service sys-kernel-config.mount; do ln -sf /dev/null "$1/etc/systemd/system/$u"; done' \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook='mkdir -p "$1/etc/systemd/system/ssh.service.d" && printf "[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n" > "$1/etc/systemd/system/ssh.service.d/host-keys.conf"' \
  "$suite" - "deb $mirror $suite main" \
  | docker import \
      -c 'CMD ["/lib/systemd/systemd"]' \
      -c 'ENV container=docker' \
      -m "lab base image, recipe $recipe_hash" \
      - "$image" >/dev/null

docker tag "$image" "$repo:latest"
log "built $image"
printf '%s\n' "$image"
