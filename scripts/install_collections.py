"""Install the collections pinned in requirements.yml without Ansible Galaxy.

The `ansible` package on PyPI bundles the community collections. This script
downloads one pinned release of it (without installing it), unpacks only the
collections that requirements.yml lists, and refuses any whose bundled version
differs from the pin, so requirements.yml stays the single source of truth.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

# The `ansible` release whose bundled collections match requirements.yml.
ANSIBLE_BUNDLE_VERSION = "14.5.0"


def read_pins(requirements: Path) -> dict[str, str]:
    """Return {"namespace.name": "version"} from a requirements.yml file."""
    data = yaml.safe_load(requirements.read_text()) or {}
    pins = {}
    for item in data.get("collections", []):
        pins[item["name"]] = str(item["version"])
    return pins


def installed_version(dest: Path, fqcn: str) -> str | None:
    """Return the version of an unpacked collection, or None when absent."""
    namespace, name = fqcn.split(".", 1)
    manifest = dest / "ansible_collections" / namespace / name / "MANIFEST.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text())["collection_info"]["version"]


def download_bundle(cache: Path) -> Path:
    """Download the pinned `ansible` wheel into cache (once) and return its path."""
    cache.mkdir(parents=True, exist_ok=True)
    pattern = f"ansible-{ANSIBLE_BUNDLE_VERSION}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--disable-pip-version-check",
                "--dest",
                str(cache),
                f"ansible=={ANSIBLE_BUNDLE_VERSION}",
            ],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        found = sorted(cache.glob(pattern))
    if not found:
        raise SystemExit(f"install_collections: ansible=={ANSIBLE_BUNDLE_VERSION} did not download")
    return found[0]


def unpack(wheel: Path, dest: Path, fqcn: str, version: str) -> None:
    """Unpack one collection from the wheel into dest, checking its version."""
    namespace, name = fqcn.split(".", 1)
    prefix = f"ansible_collections/{namespace}/{name}/"
    target = dest / "ansible_collections" / namespace / name
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith(prefix)]
        if not members:
            raise SystemExit(f"install_collections: {fqcn} is not in {wheel.name}")
        bundled = json.loads(archive.read(prefix + "MANIFEST.json"))["collection_info"]["version"]
        if bundled != version:
            raise SystemExit(
                f"install_collections: requirements.yml pins {fqcn} {version}, but "
                f"ansible {ANSIBLE_BUNDLE_VERSION} bundles {bundled}; change the pin or "
                "ANSIBLE_BUNDLE_VERSION in scripts/install_collections.py"
            )
        shutil.rmtree(target, ignore_errors=True)
        for member in members:
            archive.extract(member, dest)


def main() -> int:
    """Install every pinned collection that is missing or at another version."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requirements", type=Path, required=True)
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    args = parser.parse_args()

    pins = read_pins(args.requirements)
    stale = {c: v for c, v in pins.items() if installed_version(args.dest, c) != v}
    if not stale:
        return 0
    wheel = download_bundle(args.cache)
    for fqcn, version in sorted(stale.items()):
        unpack(wheel, args.dest, fqcn, version)
        print(f"install_collections: {fqcn} {version}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
