#!/usr/bin/env bash
# Build the lab's images on the local Docker engine, without any registry:
#   - the base image (scripts/base-image.sh);
#   - every fixture image under tests/images/<name>/Dockerfile, tagged
#     ai-fleet-lab/<name>:<hash of its folder and the base image> and :latest;
#   - an archive of each fixture image in .cache/images/<name>.tar, which the
#     lab ships to its hosts the way an air-gapped site ships images.
#   - the local package repositories that stand in for NVIDIA's and Docker's
#     (tests/fixtures/package-repo/build.sh), served in the lab.
# Each is rebuilt only when its recipe changed.
#   scripts/lab-images.sh [NAME...]   (default: every folder under tests/images)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
log() { printf 'lab-images: %s\n' "$*" >&2; }

base=$("$root/scripts/base-image.sh")
base_id=$(docker image inspect --format '{{.Id}}' "$base")
archives="$root/.cache/images"
mkdir -p "$archives"

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for d in "$root"/tests/images/*/; do
    [ -f "$d/Dockerfile" ] && names+=("$(basename "$d")")
  done
fi

for name in "${names[@]}"; do
  dir="$root/tests/images/$name"
  [ -f "$dir/Dockerfile" ] || { log "no Dockerfile in $dir"; exit 1; }
  hash=$( { printf '%s\n' "$base_id"; tar -C "$dir" --sort=name --mtime=@0 --owner=0 --group=0 \
            --exclude=__pycache__ -cf - . ; } | sha256sum | cut -c1-12)
  repo="ai-fleet-lab/$name"
  if ! docker image inspect "$repo:$hash" >/dev/null 2>&1; then
    log "building $repo:$hash"
    docker build --quiet --pull=false --build-arg "BASE_IMAGE=$base" -t "$repo:$hash" "$dir" >/dev/null
  fi
  docker tag "$repo:$hash" "$repo:latest"
  # The archive carries the tag `latest`; it is remade only when the image changed.
  stamp="$archives/$name.tar.id"
  if [ ! -f "$archives/$name.tar" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$hash" ]; then
    docker save -o "$archives/$name.tar.tmp" "$repo:latest"
    mv "$archives/$name.tar.tmp" "$archives/$name.tar"
    printf '%s\n' "$hash" >"$stamp"
  fi
  printf '%s\n' "$repo:latest"
done

"$root/tests/fixtures/package-repo/build.sh" >/dev/null
