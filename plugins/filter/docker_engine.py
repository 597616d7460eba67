"""Check Docker's daemon options before they are written to /etc/docker/daemon.json.

Two filters, each documented in an adjacent ``<name>.yml``
(``ansible-doc -t filter <name>``):

``docker_engine_daemon_errors(sources)``
    The problems that would keep dockerd from starting with the merged daemon
    options, each naming the variable that set the value at fault. ``sources``
    maps each variable (``docker_engine_daemon_options``, then every
    ``docker_engine_daemon_options_<name>`` in name order) to its value; they
    are merged as ``combine(recursive=True)`` merges them for the file.

The checks are the ones dockerd itself makes at start-up that are cheap to
make here: the data must be JSON (string keys, no objects JSON cannot hold),
every ``log-opts`` value a string, the known top-level options of the type
dockerd decodes them into (a string ``"true"`` for ``live-restore`` stops
dockerd as surely as a number for ``max-file``), and ``default-runtime`` a
runtime that exists. Options this filter does not know are left to dockerd
(``dockerd --validate`` where it has one).

``docker_engine_daemon_foreign(existing, managed, recorded)``
    What the role does with the daemon.json already on the host. ``existing``
    is the file's text (None: no file), ``managed`` the merged options,
    ``recorded`` the text of the record of the top-level keys the role wrote
    last time (None: no record). Foreign keys are the top-level keys of the
    file that ``managed`` does not set and the record does not list; the
    file to write is ``managed`` plus the foreign keys with their values.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence

from ansible.utils.vars import merge_hash

VAR_OPTIONS = "docker_engine_daemon_options"

BOOL_OPTIONS = frozenset(
    {
        "debug",
        "experimental",
        "icc",
        "init",
        "ip-forward",
        "ip-masq",
        "ip6tables",
        "iptables",
        "ipv6",
        "live-restore",
        "no-new-privileges",
        "raw-logs",
        "selinux-enabled",
        "tls",
        "tlsverify",
        "userland-proxy",
    }
)
INT_OPTIONS = frozenset(
    {
        "cpu-rt-period",
        "cpu-rt-runtime",
        "max-concurrent-downloads",
        "max-concurrent-uploads",
        "max-download-attempts",
        "mtu",
        "network-control-plane-mtu",
        "oom-score-adjust",
        "shutdown-timeout",
    }
)
STRING_OPTIONS = frozenset(
    {
        "bip",
        "bridge",
        "cgroup-parent",
        "containerd",
        "containerd-namespace",
        "containerd-plugins-namespace",
        "data-root",
        "default-cgroupns-mode",
        "default-gateway",
        "default-gateway-v6",
        "default-ipc-mode",
        "default-runtime",
        "default-shm-size",
        "exec-root",
        "fixed-cidr",
        "fixed-cidr-v6",
        "group",
        "init-path",
        "log-driver",
        "log-level",
        "metrics-addr",
        "pidfile",
        "seccomp-profile",
        "storage-driver",
        "tlscacert",
        "tlscert",
        "tlskey",
        "userland-proxy-path",
        "userns-remap",
    }
)
STRING_LIST_OPTIONS = frozenset(
    {
        "allow-nondistributable-artifacts",
        "authorization-plugins",
        "dns",
        "dns-opts",
        "dns-search",
        "exec-opts",
        "hosts",
        "insecure-registries",
        "labels",
        "registry-mirrors",
        "storage-opts",
    }
)
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
# Runtimes dockerd has without a `runtimes` entry: runc, and containerd shims by name.
BUILTIN_RUNTIMES = ("runc",)
SHIM_RUNTIME_PREFIX = "io.containerd."
# json-file and local: max-file is a count, max-size a size as go-units reads it.
ROTATING_LOG_DRIVERS = ("json-file", "local")
_COUNT = re.compile(r"[0-9]+")
_SIZE = re.compile(r"[0-9]+(\.[0-9]+)* ?[kKmMgGtTpP]?[iI]?[bB]?")


def _kind(value) -> str:
    """Name the type of a value as a YAML writer would see it."""
    kinds = (
        (type(None), "null"),
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (Mapping, "a mapping"),
    )
    for kind, name in kinds:
        if isinstance(value, kind):
            return name
    return "a list" if _is_list(value) else f"a {type(value).__name__}"


def _is_list(value) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dotted(path) -> str:
    return ".".join(str(part) for part in path)


def merge(sources):
    """Merge the source mappings as ``combine(recursive=True)`` does (later ones win).

    Ansible's own merge (``ansible.utils.vars.merge_hash``, which ``combine`` uses).

    Like Ansible's ``combine``, from the last to the first: a mapping under a key
    that a middle source sets to a scalar still merges with the first one's.
    """
    sources = list(sources)
    if not sources:
        return {}
    merged = dict(sources[-1])
    for value in reversed(sources[:-1]):
        merged = merge_hash(dict(value), merged)
    return merged


def json_problems(value, path=()):
    """(path, problem) for everything JSON cannot hold, keys included."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                yield (*path, key), f"has the key {key!r} ({_kind(key)}); JSON keys are strings"
                continue
            yield from json_problems(item, (*path, key))
    elif _is_list(value):
        for index, item in enumerate(value):
            yield from json_problems(item, (*path, index))
    elif isinstance(value, float) and not math.isfinite(value):
        yield path, f"is {value}, which JSON cannot hold"
    elif value is not None and not isinstance(value, str | int | float):
        yield path, f"is {_kind(value)}, which JSON cannot hold"


def _typed(key, value):
    """Return the problem with a known top-level option's type, or None."""
    if key in BOOL_OPTIONS and not isinstance(value, bool):
        return f"is {_kind(value)} ({value!r}); dockerd wants true or false"
    if key in INT_OPTIONS and not _is_int(value):
        return f"is {_kind(value)} ({value!r}); dockerd wants a whole number"
    if key in STRING_OPTIONS and not isinstance(value, str):
        return f"is {_kind(value)} ({value!r}); dockerd wants a string"
    if key in STRING_LIST_OPTIONS and not (
        _is_list(value) and all(isinstance(item, str) for item in value)
    ):
        return f"is {_kind(value)} ({value!r}); dockerd wants a list of strings"
    return None


def _log_opts_problems(config):
    opts = config.get("log-opts")
    if opts is None:
        return
    if not isinstance(opts, Mapping):
        yield ("log-opts",), f"is {_kind(opts)}; dockerd wants a mapping of strings"
        return
    for name, value in opts.items():
        if not isinstance(value, str):
            yield (
                ("log-opts", name),
                f"is {_kind(value)} ({value!r}); dockerd wants every log-opts value as a "
                f'string: "{str(value).lower() if isinstance(value, bool) else value}"',
            )
    if config.get("log-driver", "json-file") not in ROTATING_LOG_DRIVERS:
        return
    max_file, max_size = opts.get("max-file"), opts.get("max-size")
    if isinstance(max_file, str) and not _COUNT.fullmatch(max_file):
        yield ("log-opts", "max-file"), f'is {max_file!r}; dockerd wants a count such as "3"'
    if isinstance(max_size, str) and not _SIZE.fullmatch(max_size):
        yield ("log-opts", "max-size"), f'is {max_size!r}; dockerd wants a size such as "100m"'


def _runtime_problems(config):
    runtimes = config.get("runtimes")
    if runtimes is not None and not isinstance(runtimes, Mapping):
        yield ("runtimes",), f"is {_kind(runtimes)}; dockerd wants a mapping of runtimes"
        runtimes = None
    for name, runtime in (runtimes or {}).items():
        if not isinstance(runtime, Mapping):
            yield ("runtimes", name), f"is {_kind(runtime)}; dockerd wants a mapping (path: ...)"
            continue
        if "path" in runtime and not isinstance(runtime["path"], str):
            yield ("runtimes", name, "path"), f"is {_kind(runtime['path'])}; dockerd wants a string"
        args = runtime.get("runtimeArgs", [])
        if not (_is_list(args) and all(isinstance(arg, str) for arg in args)):
            yield ("runtimes", name, "runtimeArgs"), "must be a list of strings"
    default = config.get("default-runtime")
    if (
        isinstance(default, str)
        and default not in BUILTIN_RUNTIMES
        and not default.startswith(SHIM_RUNTIME_PREFIX)
        and default not in (runtimes or {})
    ):
        yield (
            ("default-runtime",),
            f"is {default!r}, which no runtimes entry defines (dockerd would not start)",
        )


def config_problems(config):
    """(path, problem) for the merged daemon options, JSON first, then dockerd's types."""
    problems = list(json_problems(config))
    if problems:
        return problems
    for key, value in config.items():
        problem = _typed(key, value)
        if problem:
            problems.append(((key,), problem))
    level = config.get("log-level")
    if isinstance(level, str) and level not in LOG_LEVELS:
        problems.append((("log-level",), f"is {level!r}; dockerd knows {', '.join(LOG_LEVELS)}"))
    problems += list(_log_opts_problems(config))
    problems += list(_runtime_problems(config))
    return problems


def _has(mapping, path) -> bool:
    for part in path:
        if not isinstance(mapping, Mapping) or part not in mapping:
            return False
        mapping = mapping[part]
    return True


def owner(path, sources) -> str:
    """Return the variable whose value ends up at ``path`` (the last one that sets it)."""
    for depth in range(len(path), 0, -1):
        setters = [name for name, value in sources.items() if _has(value, path[:depth])]
        if setters:
            return setters[-1]
    return next(iter(sources), VAR_OPTIONS)


def docker_engine_daemon_errors(sources):
    """Return the problems of the merged daemon options, each naming its variable."""
    if not isinstance(sources, Mapping):
        return [f"the daemon options are {_kind(sources)}, not {{variable: options}}"]
    errors = [
        f"{name} is {_kind(value)}, not a mapping of daemon options"
        for name, value in sources.items()
        if not isinstance(value, Mapping)
    ]
    if errors:
        return errors
    mappings = {str(name): value for name, value in sources.items()}
    return [
        f"{owner(path, mappings)}: {_dotted(path)} {problem}"
        for path, problem in config_problems(merge(mappings.values()))
    ]


def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _parse_existing(text):
    """Return (top-level mapping, problem) of daemon.json's text; None is no file."""
    if text is None:
        return {}, ""
    if not isinstance(text, str):
        raise TypeError(f"the current daemon.json must be its text or None, not {_kind(text)}")
    # dockerd skips a UTF-8 byte order mark and reads an empty file as no options.
    text = text.removeprefix("\ufeff")
    if not text.strip():
        return {}, ""
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError as e:
        return {}, f"is not JSON ({e})"
    if not isinstance(data, dict):
        return {}, f"holds {_kind(data)}, not a JSON object"
    return data, ""


def recorded_keys(text):
    """Return the keys of the record the role wrote (a JSON list of strings), or None.

    None when there is no record or it is not such a list: then no key counts as
    written by the role before, so none is removed for that reason.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        keys = json.loads(text)
    except ValueError:
        return None
    if not (isinstance(keys, list) and all(isinstance(key, str) for key in keys)):
        return None
    return keys


def docker_engine_daemon_foreign(existing, managed, recorded=None):
    """Return what becomes of the current daemon.json's keys, and the file to write.

    ``{"problem": "" or why the current file cannot be read as a JSON object,
    "foreign": sorted keys kept as they are, "dropped": sorted keys the role
    wrote before and no longer manages, "managed": sorted keys of ``managed``,
    "config": ``managed`` plus the foreign keys with their current values}``.
    """
    if not isinstance(managed, Mapping):
        raise TypeError(f"the managed daemon options must be a mapping, not {_kind(managed)}")
    current, problem = _parse_existing(existing)
    written = set(recorded_keys(recorded) or ())
    foreign = sorted(key for key in current if key not in managed and key not in written)
    dropped = sorted(key for key in current if key not in managed and key in written)
    config = {key: current[key] for key in foreign}
    config.update(managed)
    return {
        "problem": problem,
        "foreign": foreign,
        "dropped": dropped,
        "managed": sorted(str(key) for key in managed),
        "config": config,
    }


class FilterModule:
    """Filters for Docker's daemon options and the daemon.json they are written to."""

    def filters(self):
        """Map filter names to functions."""
        return {
            "docker_engine_daemon_errors": docker_engine_daemon_errors,
            "docker_engine_daemon_foreign": docker_engine_daemon_foreign,
        }
