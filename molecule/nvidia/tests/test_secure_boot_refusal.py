"""The Secure Boot refusal changed nothing (scenario nvidia, host with fake efivars)."""

from __future__ import annotations

testinfra_hosts = ["ansible://secure_boot"]


def test_the_fake_secure_boot_variable_is_there(host):
    """The fixture is in place (else the refusal proves nothing)."""
    var = host.file("/var/tmp/fake-efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c")
    assert var.exists
    assert var.size == 5


def test_nothing_was_configured(host):
    """No repository, key, pin or blacklist was written."""
    for path in (
        "/etc/apt/sources.list.d/nvidia-cuda.sources",
        "/etc/apt/keyrings/nvidia-cuda.asc",
        "/etc/apt/preferences.d/nvidia-driver-branch",
        "/etc/modprobe.d/blacklist-nouveau.conf",
    ):
        assert not host.file(path).exists, path


def test_nothing_was_installed(host):
    """No NVIDIA package was installed."""
    out = host.run("dpkg-query -W -f '${Package} ${db:Status-Status}\\n' 'nvidia-*' 'libcuda*'")
    installed = [line for line in out.stdout.splitlines() if line.endswith(" installed")]
    assert installed == []
