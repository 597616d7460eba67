"""The NVIDIA driver's package decisions, from the host's facts and the role's settings.

Every decision the role nvidia_driver makes about package names and versions
lives here, as small pure functions with unit tests on package lists of
Debian 12, Ubuntu 22.04 / 24.04 and RHEL 9 (tests/unit/filter/test_nvidia_driver.py),
so that the Ubuntu and RHEL paths, which the lab cannot run, are proven by
tests. Each filter is documented in an adjacent ``<name>.yml``
(``ansible-doc -t filter <name>``):

``nvidia_driver_repo_path(facts)``
    NVIDIA's name for the host's distribution and architecture in its
    repository paths and repository files: ``debian12/x86_64``,
    ``ubuntu2404/x86_64``, ``rhel9/sbsa``.

``nvidia_driver_plan(facts, branch, kernel_modules, packages, pin_globs, installed)``
    What to install, pin and hold: the package names (the operator's list or
    NVIDIA's compute-only set for the distribution, branch and kernel module
    flavour), the install arguments with the branch, the hold list, the dnf
    module stream (RHEL), the apt preferences that keep the branch (Debian
    family), and the installed driver's version and branch.

``nvidia_driver_settings_problems(branch, kernel_modules)``
    Settings NVIDIA's packages cannot satisfy, whatever the host: for example
    proprietary kernel modules on a branch NVIDIA ships only open ones for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Branches from which NVIDIA's Ubuntu packages carry no branch in their names
# (libnvidia-compute, nvidia-dkms-open); before, they did (libnvidia-compute-580).
UBUNTU_UNVERSIONED_FROM = 590
# The first branch NVIDIA ships with open kernel modules only (its driver
# installation guide, "Kernel Modules": 595 and 610 still document the
# proprietary flavour, 620 only the open one).
OPEN_ONLY_FROM = 620

DEBIAN_PACKAGES = {
    "open": ["nvidia-driver-cuda", "nvidia-kernel-open-dkms", "nvidia-persistenced"],
    "proprietary": ["nvidia-driver-cuda", "nvidia-kernel-dkms", "nvidia-persistenced"],
}
REDHAT_PACKAGES = {
    "open": ["nvidia-driver-cuda", "kmod-nvidia-open-dkms", "nvidia-persistenced"],
    "proprietary": ["nvidia-driver-cuda", "kmod-nvidia-latest-dkms", "nvidia-persistenced"],
}
# Installed packages whose version is the installed driver's.
VERSION_PACKAGES = {
    "Debian": r"^(libcuda1|nvidia-driver-cuda)$",
    # Either naming scheme, so that a driver of the other one is found too.
    "Ubuntu": r"^libnvidia-compute(-[0-9]+)?$",
    "RedHat": r"^(nvidia-driver-cuda-libs|nvidia-driver-cuda)$",
}


def family(facts: Mapping) -> str:
    """``Debian``, ``Ubuntu`` or ``RedHat``: the package layout NVIDIA uses for the host."""
    if facts.get("distribution") == "Ubuntu":
        return "Ubuntu"
    if facts.get("os_family") == "RedHat":
        return "RedHat"
    return "Debian"


def nvidia_driver_repo_path(facts: Mapping) -> str:
    """NVIDIA's ``<distro>/<arch>`` for the host, as in its repository URLs."""
    fam = family(facts)
    if fam == "Ubuntu":
        distro = "ubuntu" + str(facts.get("distribution_version", "")).replace(".", "")
    elif fam == "RedHat":
        distro = "rhel" + str(facts.get("distribution_major_version", ""))
    else:
        distro = "debian" + str(facts.get("distribution_major_version", ""))
    arch = facts.get("architecture", "x86_64")
    return f"{distro}/{'sbsa' if arch == 'aarch64' else arch}"


def default_packages(facts: Mapping, branch: int, kernel_modules: str) -> list[str]:
    """NVIDIA's compute-only (headless) package set for the host, branch and flavour."""
    fam = family(facts)
    if fam == "RedHat":
        return list(REDHAT_PACKAGES[kernel_modules])
    if fam == "Debian":
        return list(DEBIAN_PACKAGES[kernel_modules])
    dkms = "nvidia-dkms-open" if kernel_modules == "open" else "nvidia-dkms"
    if branch >= UBUNTU_UNVERSIONED_FROM:
        # NVIDIA's guide, compute-only: libnvidia-compute with the DKMS modules.
        return ["libnvidia-compute", dkms]
    suffix = f"-{branch}"
    dkms = f"nvidia-dkms-{branch}-open" if kernel_modules == "open" else f"nvidia-dkms-{branch}"
    # nvidia-utils holds nvidia-smi, nvidia-compute-utils nvidia-persistenced.
    return [
        f"libnvidia-compute{suffix}",
        dkms,
        f"nvidia-utils{suffix}",
        f"nvidia-compute-utils{suffix}",
    ]


def glob_regex(globs: Iterable[str]) -> str:
    """Return the apt-style package globs as one anchored regular expression."""
    parts = [re.escape(g).replace(r"\*", ".*").replace(r"\?", ".") for g in globs]
    return "^(" + "|".join(parts) + ")$" if parts else "^$"


def pin_version(fam: str, branch: int) -> str:
    """Return the apt ``Pin: version`` value that keeps the branch, NVIDIA's builds only.

    On Ubuntu, Canonical builds the same branch (``580.95.05-0ubuntu0.24.04.2``:
    the release in the revision); NVIDIA's builds carry none (``580.126.16-1ubuntu1``).
    A version glob alone would lift Canonical's too.
    """
    if fam == "Ubuntu":
        return rf"/^([0-9]+:)?{branch}\.[0-9.]+-[0-9]+ubuntu[0-9]+$/"
    return f"{branch}.*"


def installed_version(installed: Mapping | None, fam: str) -> str:
    """Return the installed driver's version (epoch dropped) from package_facts; '' when none."""
    pattern = re.compile(VERSION_PACKAGES[fam])
    names = sorted(n for n in (installed or {}) if pattern.match(n))
    for name in names:
        entries = installed[name] or []
        if entries:
            return re.sub(r"^[0-9]+:", "", str(entries[0].get("version", "")))
    return ""


def nvidia_driver_plan(  # noqa: PLR0913, PLR0917 - the filter's documented positional options
    facts: Mapping,
    branch,
    kernel_modules: str,
    packages: Iterable[str] | None = None,
    pin_globs: Iterable[str] | None = None,
    installed: Mapping | None = None,
) -> dict:
    """Return what the role installs, pins and holds on the host (see the module docstring)."""
    fam = family(facts)
    branch = int(str(branch))
    names = list(packages or []) or default_packages(facts, branch, kernel_modules)
    globs = list(pin_globs or [])
    covered = re.compile(glob_regex(globs))
    version = installed_version(installed, fam)
    plan = {
        "family": fam,
        "packages": names,
        "installed_version": version,
        "installed_branch": version.split(".")[0] if version else "",
        "module_stream": "",
        "pin": "",
        "install": [],
        "hold": [],
    }
    if fam == "RedHat":
        # The stream makes the branch's packages visible; the version keeps an
        # installed package of another branch from counting as present.
        plan["module_stream"] = f"{branch}-{'open' if kernel_modules == 'open' else 'dkms'}"
        plan["install"] = [f"{n}-{branch}.*" for n in names]
        plan["hold"] = list(names)
        return plan
    plan["install"] = [f"{n}={branch}.*" if covered.match(n) else n for n in names]
    branch_version = re.compile(rf"^([0-9]+:)?{branch}\.")
    pulled_in = [
        name
        for name, entries in (installed or {}).items()
        if covered.match(name)
        and entries
        and branch_version.match(str(entries[0].get("version", "")))
    ]
    plan["hold"] = sorted(set(names) | set(pulled_in))
    plan["pin"] = (
        f"# Managed by Ansible (role nvidia_driver): the NVIDIA driver stays on branch {branch}"
        + (", NVIDIA's builds only.\n" if fam == "Ubuntu" else ".\n")
        + f"Package: {' '.join(globs)}\n"
        + f"Pin: version {pin_version(fam, branch)}\n"
        + "Pin-Priority: 1000\n"
    )
    return plan


def nvidia_driver_settings_problems(branch, kernel_modules: str) -> list[str]:
    """Return the settings NVIDIA's packages cannot satisfy on any host; empty when none."""
    problems = []
    try:
        number = int(str(branch))
    except ValueError:
        return problems  # the branch's own format is checked by the argument checks
    if kernel_modules == "proprietary" and number >= OPEN_ONLY_FROM:
        problems.append(
            f"nvidia_driver_kernel_modules: proprietary, but NVIDIA ships branch {number} "
            f"with open kernel modules only (from branch {OPEN_ONLY_FROM} on); use open, "
            f"or a branch before {OPEN_ONLY_FROM} for GPUs older than Turing"
        )
    return problems


class FilterModule:
    """Ansible filter plugin: the NVIDIA driver's package decisions."""

    def filters(self):
        """Map filter names to functions."""
        return {
            "nvidia_driver_repo_path": nvidia_driver_repo_path,
            "nvidia_driver_plan": nvidia_driver_plan,
            "nvidia_driver_settings_problems": nvidia_driver_settings_problems,
        }
