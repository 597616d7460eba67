"""Unit tests of the nvidia_driver filter (plugins/filter/nvidia_driver.py).

The package lists are in the shape package_facts gathers them, with the names
and version strings NVIDIA's repositories use on each distribution (and, on
Ubuntu, Canonical's builds of the same branch beside them).
"""

from __future__ import annotations

import re

import pytest
import yaml
from plugin_loader import ROOT, load_plugin

nvidia = load_plugin("filter", "nvidia_driver")
plan = nvidia.nvidia_driver_plan
repo_path = nvidia.nvidia_driver_repo_path
problems = nvidia.nvidia_driver_settings_problems

DEFAULTS = yaml.safe_load((ROOT / "roles/nvidia_driver/defaults/main.yml").read_text())
GLOBS = DEFAULTS["nvidia_driver_apt_pin_packages"]

DEBIAN12 = {
    "distribution": "Debian",
    "os_family": "Debian",
    "distribution_major_version": "12",
    "distribution_version": "12.11",
    "architecture": "x86_64",
}
UBUNTU2204 = {
    "distribution": "Ubuntu",
    "os_family": "Debian",
    "distribution_major_version": "22",
    "distribution_version": "22.04",
    "architecture": "x86_64",
}
UBUNTU2404_ARM = {
    "distribution": "Ubuntu",
    "os_family": "Debian",
    "distribution_major_version": "24",
    "distribution_version": "24.04",
    "architecture": "aarch64",
}
ROCKY9 = {
    "distribution": "Rocky",
    "os_family": "RedHat",
    "distribution_major_version": "9",
    "distribution_version": "9.6",
    "architecture": "x86_64",
}
RHEL9_ARM = {
    "distribution": "RedHat",
    "os_family": "RedHat",
    "distribution_major_version": "9",
    "distribution_version": "9.6",
    "architecture": "aarch64",
}


def pkgs(**versions: str) -> dict:
    """package_facts' shape: {name: [{name, version, source}]} (underscores stand for dashes)."""
    return {
        name.replace("_", "-"): [{"name": name.replace("_", "-"), "version": v, "source": "apt"}]
        for name, v in versions.items()
    }


# Debian 12, driver 580 from NVIDIA's repository, and packages the globs match
# that are not the driver's (libnvme1).
DEBIAN12_580 = pkgs(
    libcuda1="580.95.05-1",
    nvidia_driver_cuda="580.95.05-1",
    nvidia_kernel_open_dkms="580.95.05-1",
    nvidia_persistenced="580.95.05-1",
    firmware_nvidia_gsp="580.95.05-1",
    libnvidia_ml1="580.95.05-1",
    nvidia_kernel_support="580.95.05-1",
    nvidia_modprobe="580.95.05-1",
    libnvme1="1.3-1",
)
# Ubuntu 24.04, 580 from NVIDIA (1ubuntu1) next to Canonical's signed modules.
UBUNTU_580 = pkgs(
    libnvidia_compute_580="580.126.16-1ubuntu1",
    nvidia_dkms_580_open="580.126.16-1ubuntu1",
    nvidia_kernel_common_580="580.126.16-1ubuntu1",
    nvidia_kernel_source_580_open="580.126.16-1ubuntu1",
    nvidia_firmware_580="580.126.16-1ubuntu1",
    nvidia_utils_580="580.126.16-1ubuntu1",
    nvidia_compute_utils_580="580.126.16-1ubuntu1",
    libnvidia_decode_580="580.126.16-1ubuntu1",
    linux_modules_nvidia_580_server_open_generic="6.8.0-60.63",
)
# Ubuntu 22.04, branch 590 names (no branch in the name).
UBUNTU_590 = pkgs(
    libnvidia_compute="590.44.01-1ubuntu1",
    nvidia_dkms_open="590.44.01-1ubuntu1",
    nvidia_kernel_common="590.44.01-1ubuntu1",
)
# RHEL 9 family, driver 580 from the 580-open stream (epoch 3).
RHEL_580 = pkgs(
    nvidia_driver_cuda="3:580.95.05-1.el9",
    nvidia_driver_cuda_libs="3:580.95.05-1.el9",
    kmod_nvidia_open_dkms="3:580.95.05-1.el9",
    nvidia_persistenced="3:580.95.05-1.el9",
)


def test_filters_are_registered():
    assert set(nvidia.FilterModule().filters()) == {
        "nvidia_driver_repo_path",
        "nvidia_driver_plan",
        "nvidia_driver_settings_problems",
    }


@pytest.mark.parametrize(
    ("facts", "path"),
    [
        (DEBIAN12, "debian12/x86_64"),
        (UBUNTU2204, "ubuntu2204/x86_64"),
        (UBUNTU2404_ARM, "ubuntu2404/sbsa"),
        (ROCKY9, "rhel9/x86_64"),
        (RHEL9_ARM, "rhel9/sbsa"),
    ],
)
def test_repository_path_is_nvidias_name(facts, path):
    assert repo_path(facts) == path


def test_debian_installs_the_compute_only_set_of_the_branch():
    result = plan(DEBIAN12, "580", "open", [], GLOBS, {})
    assert result["packages"] == [
        "nvidia-driver-cuda",
        "nvidia-kernel-open-dkms",
        "nvidia-persistenced",
    ]
    assert result["install"] == [
        "nvidia-driver-cuda=580.*",
        "nvidia-kernel-open-dkms=580.*",
        "nvidia-persistenced=580.*",
    ]
    assert result["module_stream"] == ""
    assert "Pin: version 580.*\n" in result["pin"]
    assert plan(DEBIAN12, 580, "proprietary", [], GLOBS, {})["packages"][1] == "nvidia-kernel-dkms"


def test_debian_holds_what_the_branch_pulled_in_and_nothing_else():
    result = plan(DEBIAN12, "580", "open", [], GLOBS, DEBIAN12_580)
    assert result["installed_version"] == "580.95.05-1"
    assert result["installed_branch"] == "580"
    assert "firmware-nvidia-gsp" in result["hold"]
    assert "libnvidia-ml1" in result["hold"]
    assert "libnvme1" not in result["hold"]  # matches libnv*, but is not the driver's
    assert result["hold"] == sorted(result["hold"])


def test_ubuntu_580_uses_the_branch_suffixed_compute_only_names():
    result = plan(UBUNTU2204, "580", "open", [], GLOBS, {})
    assert result["packages"] == [
        "libnvidia-compute-580",
        "nvidia-dkms-580-open",
        "nvidia-utils-580",
        "nvidia-compute-utils-580",
    ]
    assert not any(
        p.startswith("nvidia-open") for p in result["packages"]
    )  # not the desktop driver
    assert plan(UBUNTU2204, "580", "proprietary", [], GLOBS, {})["packages"][1] == "nvidia-dkms-580"


def test_ubuntu_590_and_later_use_the_unversioned_names():
    result = plan(UBUNTU2204, "590", "open", [], GLOBS, UBUNTU_590)
    assert result["packages"] == ["libnvidia-compute", "nvidia-dkms-open"]
    assert result["install"] == ["libnvidia-compute=590.*", "nvidia-dkms-open=590.*"]
    assert result["installed_version"] == "590.44.01-1ubuntu1"
    assert plan(UBUNTU2204, "595", "proprietary", [], GLOBS, {})["packages"] == [
        "libnvidia-compute",
        "nvidia-dkms",
    ]


def test_ubuntu_finds_an_installed_driver_of_the_other_naming_scheme():
    assert plan(UBUNTU2404_ARM, "590", "open", [], GLOBS, UBUNTU_580)["installed_branch"] == "580"
    assert plan(UBUNTU2404_ARM, "580", "open", [], GLOBS, UBUNTU_590)["installed_branch"] == "590"


def _apt_pin_regex(pin: str) -> re.Pattern:
    value = re.search(r"^Pin: version (.*)$", pin, re.M).group(1)
    assert value.startswith("/") and value.endswith("/")
    return re.compile(value[1:-1])


@pytest.mark.parametrize(
    ("version", "lifted"),
    [
        ("580.126.16-1ubuntu1", True),  # NVIDIA's build
        ("580.95.05-0ubuntu1", True),  # NVIDIA's earlier revision scheme
        ("580.95.05-0ubuntu0.24.04.2", False),  # Canonical's build for 24.04
        ("580.95.05-0ubuntu0.22.04.1", False),  # Canonical's build for 22.04
        ("590.44.01-1ubuntu1", False),  # another branch
        ("5800.1-1ubuntu1", False),
    ],
)
def test_ubuntu_pin_lifts_nvidias_builds_of_the_branch_only(version, lifted):
    pin = plan(UBUNTU2204, "580", "open", [], GLOBS, {})["pin"]
    assert bool(_apt_pin_regex(pin).match(version)) is lifted


def test_ubuntu_holds_the_branch_packages_not_canonicals_kernel_modules():
    result = plan(UBUNTU2404_ARM, "580", "open", [], GLOBS, UBUNTU_580)
    assert "nvidia-kernel-common-580" in result["hold"]
    assert "linux-modules-nvidia-580-server-open-generic" not in result["hold"]


def test_an_operators_package_outside_the_globs_is_installed_unversioned():
    signed = "linux-modules-nvidia-580-server-open-generic"
    result = plan(UBUNTU2204, "580", "open", ["nvidia-utils-580", signed], GLOBS, {})
    assert result["install"] == ["nvidia-utils-580=580.*", signed]


def test_rhel_enables_the_branch_stream_and_locks_the_compute_only_set():
    result = plan(ROCKY9, "580", "open", [], GLOBS, RHEL_580)
    assert result["module_stream"] == "580-open"
    assert result["packages"] == [
        "nvidia-driver-cuda",
        "kmod-nvidia-open-dkms",
        "nvidia-persistenced",
    ]
    assert result["install"] == [
        "nvidia-driver-cuda-580.*",
        "kmod-nvidia-open-dkms-580.*",
        "nvidia-persistenced-580.*",
    ]
    assert result["hold"] == result["packages"]
    assert result["pin"] == ""
    assert result["installed_version"] == "580.95.05-1.el9"  # epoch dropped
    proprietary = plan(RHEL9_ARM, "575", "proprietary", [], GLOBS, {})
    assert proprietary["module_stream"] == "575-dkms"
    assert proprietary["packages"][1] == "kmod-nvidia-latest-dkms"


def test_no_driver_installed_reads_as_empty():
    for facts in (DEBIAN12, UBUNTU2204, ROCKY9):
        result = plan(facts, "580", "open", [], GLOBS, {"bash": [{"version": "5.2"}]})
        assert (result["installed_version"], result["installed_branch"]) == ("", "")


def test_proprietary_modules_are_refused_where_nvidia_ships_open_ones_only():
    assert problems("580", "proprietary") == []
    assert problems("610", "proprietary") == []
    assert problems("620", "open") == []
    (message,) = problems("620", "proprietary")
    assert message.startswith(
        "nvidia_driver_kernel_modules: proprietary, but NVIDIA ships branch 620"
    )
    assert problems("abc", "proprietary") == []
