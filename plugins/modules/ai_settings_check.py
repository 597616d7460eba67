#!/usr/bin/python
"""Documentation of the action ai_settings_check (plugins/action/ai_settings_check.py).

The check runs entirely on the controller; this file only documents it.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ai_settings_check
short_description: Check a role's settings before anything changes, one short line per problem
version_added: "0.3.0"
description:
  - Reads the variables of a role (inventory, extra vars, role defaults) on the controller
    and checks them against the role's C(meta/argument_specs.yml) and the checks given here -
    ports, addresses to publish on, whole-number ranges, secrets, keys a mapping must not set.
  - Touches nothing on the host, so it runs before any host changes (the first play of
    every playbook, C(playbooks/validate.yml)) and in check mode.
  - Fails with one line per problem, each naming the variable, what was given and what is
    expected. The value of a variable marked C(no_log) in the spec, or listed in O(secrets),
    never appears.
options:
  spec:
    description:
      - Path of the role's C(meta/argument_specs.yml); its O(entry_point) options are checked.
    type: path
  entry_point:
    description: The entry point of O(spec) whose options are checked.
    type: str
    default: main
  ports:
    description: Variables that must be TCP ports (1-65535).
    type: list
    elements: str
    default: []
  bind_addresses:
    description:
      - Variables that are addresses a port is published on. Each must be an IP literal
        that the host owns (O(host_addresses)) or a loopback address; C(0.0.0.0) and C(::)
        only for those also listed in O(any_address).
    type: list
    elements: str
    default: []
  any_address:
    description: Those O(bind_addresses) that may also be C(0.0.0.0) or C(::) (every address).
    type: list
    elements: str
    default: []
  host_addresses:
    description:
      - The host's own IP addresses (for example C(ansible_all_ipv4_addresses) plus
        C(ansible_all_ipv6_addresses)). When omitted, ownership is not checked.
    type: list
    elements: str
  secrets:
    description:
      - Variables that hold secrets. Refused - not text, fewer than 32 characters, leading or
        trailing whitespace, CR, LF or control characters, a published value (the upstream
        example, the placeholders and test values of this project), a placeholder marker
        (C(replace-with), C(change-me), C(example) ...), fewer than 10 distinct characters,
        a repeated or sequential pattern, under 96 bits of estimated entropy.
    type: list
    elements: str
    default: []
  ranges:
    description: Variables that must be whole numbers, each mapped to C([lowest, highest]).
    type: dict
    default: {}
  forbidden_keys:
    description: Mapping variables, each mapped to the dotted keys it must not set (C(jwt.secret)).
    type: dict
    default: {}
  problems:
    description: Further problems found by the caller (text lines), reported with the others.
    type: list
    elements: str
    default: []
author:
  - AI fleet maintainers
"""

EXAMPLES = r"""
- name: Check the node stack's settings
  ai_settings_check:
    spec: "{{ role_path }}/meta/argument_specs.yml"
    ports: [ai_node_http_port]
    bind_addresses: [ai_node_http_bind_address]
    any_address: [ai_node_http_bind_address]
    host_addresses: >-
      {{ ansible_facts['all_ipv4_addresses'] + ansible_facts['all_ipv6_addresses'] }}
    secrets: [ai_node_jwt_secret]
    ranges:
      ai_node_audio_stream_chunk_size: [1, 1048576]
    forbidden_keys:
      ai_node_config_overrides: [jwt.secret]
"""

RETURN = r"""
msg:
  description:
    - The host and either C(settings accepted), or how many settings were refused followed
      by one line per refused setting, each naming the variable, what was given and what is
      expected.
  returned: always
  type: str
  sample: |-
    gpu-1: 1 setting(s) refused, nothing was changed:
      - ai_node_http_port: given '88oo', expected a port number from 1 to 65535
"""
