"""A GPU host whose new driver waits for a reboot (scenario nvidia, ai-mol-nv-gpu-3).

The host has an NVIDIA GPU on the PCI bus (a fake sysfs folder) and no nvidia
kernel module can load in a container; nvidia_driver_skip_reboot is true. The
role installed and held the driver, enabled but did not start the persistence
daemon, and did not fail (converge and idempotence runs both passed).
"""

from __future__ import annotations

testinfra_hosts = ["ansible://ai-mol-nv-gpu-3"]

DRIVER_PACKAGES = ["nvidia-driver-cuda", "nvidia-kernel-open-dkms", "nvidia-persistenced"]


def test_no_nvidia_module_is_loaded(host):
    """The precondition: the installed driver is not the loaded one."""
    assert not host.file("/sys/module/nvidia/version").exists


def test_driver_is_installed_and_held(host):
    """The driver is installed and held although the reboot is pending."""
    held = set(host.check_output("apt-mark showhold").split())
    for name in DRIVER_PACKAGES:
        assert host.package(name).is_installed, name
        assert name in held, name


def test_persistence_daemon_is_enabled_but_not_started(host):
    """Enabled for the boot that loads the driver; not started before it."""
    service = host.service("nvidia-persistenced")
    assert service.is_enabled
    assert not service.is_running
