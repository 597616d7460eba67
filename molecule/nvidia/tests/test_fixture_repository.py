"""What only the local repository fixture can show (scenario nvidia, ai-mol-nv-gpu-1).

The fixture repository holds newer releases than the ones pinned (driver
branch 590, toolkit 1.18.0) and Docker's packages under their real names.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

testinfra_hosts = ["ansible://ai-mol-nv-gpu-1"]

DOCKER_PACKAGES = [
    "docker-ce",
    "docker-ce-cli",
    "containerd.io",
    "docker-buildx-plugin",
    "docker-compose-plugin",
]


def policy(host, name: str) -> str:
    """Return `apt-cache policy NAME`."""
    result = host.run(f"apt-cache policy {name}")
    assert result.rc == 0, result.stderr
    return result.stdout


def test_driver_580_installed_although_590_is_offered(host):
    """The branch pin beats the newer branch in the repository."""
    assert host.package("nvidia-driver-cuda").version == "580.95.05-1"
    assert host.package("nvidia-kernel-open-dkms").version == "580.95.05-1"
    assert not host.package("nvidia-kernel-dkms").is_installed
    assert "590.44.01-1" in policy(host, "nvidia-driver-cuda")


def test_kernel_headers_of_the_running_kernel_are_installed(host):
    """DKMS gets the headers of the running kernel."""
    kernel = host.check_output("uname -r")
    assert host.package(f"linux-headers-{kernel}").is_installed


def test_toolkit_1_17_8_installed_although_1_18_0_is_offered(host):
    """The toolkit version pin beats the newer release."""
    assert host.package("nvidia-container-toolkit").version == "1.17.8-1"
    assert "1.18.0-1" in policy(host, "nvidia-container-toolkit")


def test_docker_comes_from_the_docker_repository(host):
    """docker_engine's Docker-repository path: real names, distribution packages gone."""
    for name in DOCKER_PACKAGES:
        assert host.package(name).is_installed, name
    for name in ("docker.io", "containerd", "runc"):
        assert not host.package(name).is_installed, name
    sources = host.file("/etc/apt/sources.list.d/docker.sources").content_string
    assert "/docker/linux/debian" in sources
    assert "Suites: bookworm" in sources
    assert "Components: stable" in sources


def test_the_compose_and_buildx_plugins_answer(host):
    """The CLI plugins are where the Docker CLI looks for them."""
    assert "Docker compose version" in host.check_output("docker compose version")
    assert "Docker buildx version" in host.check_output("docker buildx version")


def _fixture_fingerprint() -> str:
    """Return the fixture repository's key fingerprint, as its build recorded it."""
    root = Path(__file__).resolve().parents[3]
    return (root / ".cache" / "package-repo" / "repo" / ".fingerprint").read_text().strip()


def _key_fingerprints(text: str) -> list[str]:
    """Return the primary key fingerprints of a key file, read by the project's filter."""
    root = Path(__file__).resolve().parents[3]
    spec = importlib.util.spec_from_file_location(
        "package_source_filter_in_nvidia_tests", root / "plugins" / "filter" / "package_source.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.package_source_key_fingerprints(text)


def test_each_repository_key_is_the_pinned_one(host):
    """The keys the roles wrote passed the fingerprint check: each is the fixture's key."""
    for name in ("nvidia-cuda", "nvidia-container-toolkit", "docker"):
        key = host.file(f"/etc/apt/keyrings/{name}.asc")
        assert key.mode == 0o644, name
        assert _key_fingerprints(key.content_string) == [_fixture_fingerprint()], name
        source = host.file(f"/etc/apt/sources.list.d/{name}.sources").content_string
        assert f"Signed-By: /etc/apt/keyrings/{name}.asc" in source, name


def test_debian_contrib_is_enabled_for_nvidias_packages(host):
    """Every entry of Debian's own archive lists contrib, as NVIDIA's guide sets it up."""
    entries = []
    for path in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"):
        text = host.file(path).content_string if host.file(path).exists else ""
        entries += [line for line in text.splitlines() if line.startswith("Components:")]
        entries += [line for line in text.splitlines() if line.startswith(("deb ", "deb-src "))]
    assert entries, "no entries of Debian's archive found"
    assert all("contrib" in line.split() for line in entries if "main" in line.split()), entries
