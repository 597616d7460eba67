#!/usr/bin/python
"""Ansible module nvidia_gpu_facts: NVIDIA GPUs of a host, from sysfs and nvidia-smi."""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.nvidia_smi import (
    HEADER_ARGS,
    QUERY_ARGS,
    NvidiaSmiParseError,
    classify_failure,
    first_line,
    parse_cuda_version,
    parse_query,
    scan_pci,
)

DOCUMENTATION = r"""
---
module: nvidia_gpu_facts
short_description: Report the NVIDIA GPUs of a host, from PCI and nvidia-smi
version_added: "0.1.0"
description:
  - Lists the NVIDIA display-class PCI devices of the host (read from sysfs, so it
    works before any driver is installed).
  - Runs C(nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,memory.total,memory.used,
    driver_version,mig.mode.current --format=csv,noheader,nounits) and returns one entry
    per GPU, and reads the driver's
    CUDA version from the header of C(nvidia-smi -q -d COMPUTE).
  - Never fails because nvidia-smi is missing or cannot reach the driver; it reports
    why in O(nvidia_gpu.nvidia_smi.state), so a play can decide what that means.
  - Only reads; it changes nothing on the host.
options:
  nvidia_smi_path:
    description:
      - Path of nvidia-smi. Default is C(nvidia-smi) found on the PATH (or in
        C(/usr/bin), C(/usr/local/bin)).
    type: path
  pci_devices_dir:
    description:
      - The sysfs folder of PCI devices. Each device's C(vendor) and C(class) files are read.
    type: path
    default: /sys/bus/pci/devices
  query_nvidia_smi:
    description:
      - Run nvidia-smi. With V(false) only the PCI devices are reported (for example
        before the driver is installed).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode runs it in full.
  diff_mode:
    support: none
  facts:
    support: full
  idempotent:
    support: full
    description: It never changes anything.
notes:
  - The CUDA version is the highest CUDA version the driver supports (what the
    header of nvidia-smi shows), not a CUDA toolkit installed on the host.
author:
  - AI fleet maintainers
"""

EXAMPLES = r"""
- name: Collect the GPU facts
  nvidia_gpu_facts:

- name: Require a working driver
  ansible.builtin.assert:
    that: ansible_facts['nvidia_gpu']['nvidia_smi']['state'] == 'ok'
    fail_msg: "nvidia-smi: {{ ansible_facts['nvidia_gpu']['nvidia_smi']['msg'] }}"

- name: Only look for NVIDIA PCI devices (no driver needed)
  nvidia_gpu_facts:
    query_nvidia_smi: false
  register: gpu_scan

- name: Show the GPUs
  ansible.builtin.debug:
    msg: "{{ item.index }}: {{ item.name }}, MIG {{ item.mig_mode }}"
  loop: "{{ ansible_facts['nvidia_gpu']['gpus'] }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: complex
  contains:
    nvidia_gpu:
      description: The NVIDIA GPUs of the host.
      returned: always
      type: complex
      contains:
        pci_devices:
          description: NVIDIA display-class PCI devices found in sysfs, by address.
          returned: always
          type: list
          elements: dict
          sample:
            - {address: "0000:18:00.0", vendor_id: "0x10de", device_id: "0x2330", class: "0x030200"}
        gpus:
          description:
            - One entry per GPU nvidia-smi reports, by index.
            - Empty unless nvidia_smi.state is C(ok).
            - Memory in MiB; a value nvidia-smi reports as C([N/A]) is null.
          returned: always
          type: list
          elements: dict
          sample:
            - index: 0
              name: NVIDIA H100 80GB HBM3
              uuid: GPU-5c3f2b8e-9a41-4d7e-8b2c-6f1e0a9d3c47
              pci_bus_id: "00000000:18:00.0"
              memory_total_mib: 81559
              memory_used_mib: 0
              driver_version: "580.95.05"
              mig_mode: Disabled
              mig_enabled: false
        gpu_count:
          description: Number of entries in gpus.
          returned: always
          type: int
          sample: 8
        driver_version:
          description: Driver version nvidia-smi reports; null when it does not answer.
          returned: always
          type: str
          sample: "580.95.05"
        cuda_version:
          description: Highest CUDA version the driver supports; null when nvidia-smi fails.
          returned: always
          type: str
          sample: "13.0"
        nvidia_smi:
          description: How nvidia-smi answered.
          returned: always
          type: dict
          contains:
            state:
              description:
                - C(ok); C(not_installed); C(no_driver) (the kernel module is not loaded);
                  C(driver_library_mismatch) (the loaded module and the libraries differ,
                  reboot after a driver change); C(no_devices); C(error); or C(skipped)
                  when query_nvidia_smi is false.
              type: str
              sample: ok
            path:
              description: The nvidia-smi that ran; null when none was found.
              type: str
              sample: /usr/bin/nvidia-smi
            rc:
              description: Its exit code; null when it did not run.
              type: int
              sample: 0
            msg:
              description: The first line of its output when it failed; empty otherwise.
              type: str
              sample: "Failed to initialize NVML: Driver/library version mismatch"
"""


def query_gpus(run, smi_path: str | None) -> dict:
    """Run nvidia-smi through `run(argv) -> (rc, stdout, stderr)`; return the facts it gives."""
    facts = {"gpus": [], "gpu_count": 0, "driver_version": None, "cuda_version": None}
    if not smi_path:
        facts["nvidia_smi"] = {
            "state": "not_installed",
            "path": None,
            "rc": None,
            "msg": "nvidia-smi was not found",
        }
        return facts
    rc, out, err = run([smi_path, *QUERY_ARGS])
    if rc != 0:
        output = "\n".join(part for part in (out, err) if part)
        facts["nvidia_smi"] = {
            "state": classify_failure(rc, output),
            "path": smi_path,
            "rc": rc,
            "msg": first_line(output),
        }
        return facts
    gpus = parse_query(out)
    facts["gpus"] = gpus
    facts["gpu_count"] = len(gpus)
    facts["driver_version"] = gpus[0]["driver_version"] if gpus else None
    header_rc, header_out, _ = run([smi_path, *HEADER_ARGS])
    if header_rc == 0:
        facts["cuda_version"] = parse_cuda_version(header_out)
    facts["nvidia_smi"] = {"state": "ok", "path": smi_path, "rc": rc, "msg": ""}
    return facts


def main() -> None:
    """Run the module."""
    module = AnsibleModule(
        argument_spec={
            "nvidia_smi_path": {"type": "path"},
            "pci_devices_dir": {"type": "path", "default": "/sys/bus/pci/devices"},
            "query_nvidia_smi": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    facts = {"pci_devices": scan_pci(params["pci_devices_dir"])}

    if not params["query_nvidia_smi"]:
        facts.update(gpus=[], gpu_count=0, driver_version=None, cuda_version=None)
        facts["nvidia_smi"] = {"state": "skipped", "path": None, "rc": None, "msg": ""}
    else:
        smi_path = params["nvidia_smi_path"]
        if smi_path is None:
            smi_path = module.get_bin_path("nvidia-smi", opt_dirs=["/usr/bin", "/usr/local/bin"])
        elif not os.path.exists(smi_path):
            smi_path = None

        def run(argv):
            return module.run_command(argv, environ_update={"LC_ALL": "C"})

        try:
            facts.update(query_gpus(run, smi_path))
        except NvidiaSmiParseError as exc:
            module.fail_json(msg=f"cannot parse the output of {smi_path}: {exc}")

    module.exit_json(changed=False, ansible_facts={"nvidia_gpu": facts})


if __name__ == "__main__":
    main()
