"""NVIDIA driver and container toolkit on the GPU nodes.

What is expected follows the inventory, as the roles decide: a host with an
NVIDIA GPU on the PCI bus, or with nvidia_driver_install_without_gpu, gets the
driver; any other host must have been left without it (the no-GPU skip). The
toolkit and Docker's GPU runtime are on every GPU node. The driver checks are
for apt hosts (Debian, Ubuntu).
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_ok

testinfra_hosts = ["ansible://gpu_nodes"]

PROBE_IMAGE = os.environ.get("AI_FLEET_PROBE_IMAGE", "ai-fleet-lab/probe:latest")
DRIVER_SOURCES = "/etc/apt/sources.list.d/nvidia-cuda.sources"
DRIVER_PIN = "/etc/apt/preferences.d/nvidia-driver-branch"
TOOLKIT_SOURCES = "/etc/apt/sources.list.d/nvidia-container-toolkit.sources"
# The repository lists of NVIDIA's documented set-up, which the roles replace.
LEGACY_DRIVER_LISTS = "/etc/apt/sources.list.d/cuda-*-*.list"
LEGACY_TOOLKIT_LIST = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
TOOLKIT_PACKAGES = [
    "nvidia-container-toolkit",
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
]


def _truthy(value) -> bool:
    return str(value).strip().lower() in {"true", "yes", "1"}


def _vars(host) -> dict:
    return host.ansible.get_variables()


def has_gpu(host) -> bool:
    """Whether the host has an NVIDIA display-class PCI device, read as the role reads it."""
    pci = _vars(host).get("nvidia_driver_pci_devices_dir", "/sys/bus/pci/devices")
    script = (
        f'for d in {pci}/*; do [ "$(cat "$d/vendor" 2>/dev/null)" = 0x10de ] || continue; '
        'case "$(cat "$d/class" 2>/dev/null)" in 0x03*) echo "$d";; esac; done'
    )
    return bool(host.run(script).stdout.strip())


def driver_expected(host) -> bool:
    return has_gpu(host) or _truthy(_vars(host).get("nvidia_driver_install_without_gpu", False))


def branch(host) -> str:
    return str(_vars(host).get("nvidia_driver_branch", "580"))


def configured_driver_packages(host) -> list[str]:
    """The driver packages the role installs: nvidia_driver_packages, else its defaults."""
    variables = _vars(host)
    if variables.get("nvidia_driver_packages"):
        return list(variables["nvidia_driver_packages"])
    modules = variables.get("nvidia_driver_kernel_modules", "open")
    if host.system_info.distribution.lower() == "ubuntu":
        # Up to 580 the branch is in the names; from 590 on it is not.
        suffix = f"-{branch(host)}" if int(branch(host)) <= 580 else ""
        return [("nvidia-open" if modules == "open" else "cuda-drivers") + suffix]
    kernel = "nvidia-kernel-open-dkms" if modules == "open" else "nvidia-kernel-dkms"
    return ["nvidia-driver-cuda", kernel, "nvidia-persistenced"]


def require_apt(host):
    if not host.exists("dpkg-query"):
        pytest.skip("the driver checks are for apt hosts")


def installed_driver_packages(host) -> dict[str, str]:
    """Installed NVIDIA driver packages (the branch pin's globs, toolkit excluded) -> version."""
    out = host.run(
        "dpkg-query -W -f '${Package} ${Version} ${db:Status-Status}\\n' "
        "'nvidia-*' 'libnv*' 'libcuda*' 'cuda-drivers*' 2>/dev/null"
    ).stdout
    found = {}
    for line in out.splitlines():
        name, version, status = [*line.split(), "", "", ""][:3]
        if status == "installed" and "container" not in name:
            found[name] = version
    return found


def held(host) -> set[str]:
    return set(run_ok(host, "apt-mark", "showhold").split())


# --- driver: skipped without a GPU ---------------------------------------------------


def test_driver_is_skipped_on_a_host_without_gpu(host):
    if driver_expected(host):
        pytest.skip("this host gets the driver")
    require_apt(host)
    assert not host.file(DRIVER_SOURCES).exists
    assert not host.file(DRIVER_PIN).exists
    assert not host.file("/etc/modprobe.d/blacklist-nouveau.conf").exists
    assert installed_driver_packages(host) == {}


# --- driver: installed -----------------------------------------------------------------


@pytest.fixture
def driver_host(host):
    if not driver_expected(host):
        pytest.skip("no GPU and nvidia_driver_install_without_gpu is not set: no driver here")
    require_apt(host)
    return host


def test_driver_repository_and_key_are_configured(driver_host):
    sources = driver_host.file(DRIVER_SOURCES)
    assert sources.exists
    fields = dict(
        line.split(": ", 1) for line in sources.content_string.splitlines() if ": " in line
    )
    assert fields["Suites"] == "/"
    assert fields["URIs"].endswith("/x86_64") or fields["URIs"].endswith("/sbsa")
    key = driver_host.file(fields["Signed-By"])
    assert key.exists
    assert "BEGIN PGP PUBLIC KEY BLOCK" in key.content_string


def test_driver_branch_is_pinned(driver_host):
    pin = driver_host.file(DRIVER_PIN).content_string
    assert f"Pin: version {branch(driver_host)}.*" in pin
    assert "Pin-Priority: 1000" in pin


def test_driver_packages_are_on_the_branch_and_held(driver_host):
    packages = installed_driver_packages(driver_host)
    assert packages, "no NVIDIA driver package is installed"
    wanted = branch(driver_host) + "."
    off_branch = {n: v for n, v in packages.items() if not v.split(":")[-1].startswith(wanted)}
    assert off_branch == {}, f"packages off branch {wanted}*: {off_branch}"
    wanted_held = set(configured_driver_packages(driver_host))
    assert wanted_held <= set(packages), f"not installed: {sorted(wanted_held - set(packages))}"
    # The role holds what it installs by name and every driver package of the
    # branch that came with it.
    not_held = (wanted_held | set(packages)) - held(driver_host)
    assert not_held == set(), f"driver packages not held: {sorted(not_held)}"


def test_legacy_driver_repository_lists_are_gone(driver_host):
    """NVIDIA's documented cuda-<distro>-<arch>.list would conflict with the deb822 source."""
    found = driver_host.run(f"ls {LEGACY_DRIVER_LISTS} 2>/dev/null").stdout.split()
    assert found == []


def test_apt_would_keep_the_branch(driver_host):
    """The candidate of every held driver package is on the branch, whatever else is offered."""
    wanted = branch(driver_host) + "."
    for name in sorted(held(driver_host) & set(installed_driver_packages(driver_host))):
        policy = run_ok(driver_host, "apt-cache", "policy", name)
        candidate = next(
            line.split(":", 1)[1].strip()
            for line in policy.splitlines()
            if line.strip().startswith("Candidate:")
        )
        assert candidate.split(":")[-1].startswith(wanted), f"{name}: candidate {candidate}"


def test_nouveau_is_blacklisted(driver_host):
    conf = driver_host.file("/etc/modprobe.d/blacklist-nouveau.conf")
    assert conf.exists
    assert "blacklist nouveau" in conf.content_string.splitlines()


def test_persistence_daemon_is_enabled(driver_host):
    service = driver_host.service("nvidia-persistenced")
    assert service.is_enabled
    # Started once the driver is loaded; before the pending reboot it cannot run.
    if has_gpu(driver_host) and driver_host.file("/sys/module/nvidia/version").exists:
        assert service.is_running


def test_nvidia_smi_answers_where_there_is_a_gpu(driver_host):
    if not has_gpu(driver_host):
        pytest.skip("no GPU: nvidia-smi cannot answer")
    out = run_ok(
        driver_host, "nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"
    )
    assert out.strip()
    assert all(
        line.split(",")[-1].strip().startswith(branch(driver_host) + ".")
        for line in out.splitlines()
    )


# --- container toolkit and Docker's GPU runtime -----------------------------------------


def test_toolkit_repository_and_key_are_configured(host):
    require_apt(host)
    sources = host.file(TOOLKIT_SOURCES)
    assert sources.exists
    fields = dict(
        line.split(": ", 1) for line in sources.content_string.splitlines() if ": " in line
    )
    assert fields["Suites"] == "/"
    assert "BEGIN PGP PUBLIC KEY BLOCK" in host.file(fields["Signed-By"]).content_string


def test_legacy_toolkit_repository_list_is_gone(host):
    """NVIDIA's documented nvidia-container-toolkit.list would conflict with the deb822 source."""
    require_apt(host)
    assert not host.file(LEGACY_TOOLKIT_LIST).exists


def test_toolkit_packages_are_pinned_and_held(host):
    require_apt(host)
    versions = {name: host.package(name).version for name in TOOLKIT_PACKAGES}
    assert all(host.package(name).is_installed for name in TOOLKIT_PACKAGES), versions
    assert len(set(versions.values())) == 1, f"toolkit packages differ: {versions}"
    wanted = str(_vars(host).get("nvidia_container_toolkit_version", ""))
    if wanted:
        assert set(versions.values()) == {wanted}
    assert set(TOOLKIT_PACKAGES) <= held(host)


def test_docker_has_the_nvidia_runtime(host, docker_info):
    options = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert options["runtimes"]["nvidia"]["path"].endswith("nvidia-container-runtime")
    assert "nvidia" in docker_info["Runtimes"]
    assert host.exists("nvidia-container-runtime-hook")


def test_containers_get_gpus_by_device_request(host):
    """`docker run --gpus all`: dockerd's nvidia device driver sets NVIDIA_VISIBLE_DEVICES."""
    run_ok(host, "docker", "image", "inspect", PROBE_IMAGE)
    result = host.run(
        f"docker run --rm --gpus all --network none --pull never {PROBE_IMAGE} "
        "/bin/busybox sh -c 'echo \"visible=$NVIDIA_VISIBLE_DEVICES\"'"
    )
    assert result.rc == 0, f"--gpus all failed: {result.stderr}"
    assert result.stdout.strip() == "visible=all"
