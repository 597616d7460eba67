"""Settings of the service: defaults, then the YAML file, then environment overrides.

Every key can be overridden by an environment variable named after it, with `.` turned
into `_` and upper-cased (`ai.request.max_single_delta_len` ->
`AI_REQUEST_MAX_SINGLE_DELTA_LEN`, `zmq.unit_manager_host` -> `ZMQ_UNIT_MANAGER_HOST`);
an empty variable counts as unset, as with the Go service's config library (viper).
The service refuses to start when `jwt.secret` is empty, shorter than 32 characters or
the published example value. The secret is never logged.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiservice import yamlsubset

PUBLISHED_EXAMPLE_JWT_SECRET = "your-secret-key-change-in-production-min-32-chars"
MIN_JWT_SECRET_LENGTH = 32

# The keys this service reads, with their defaults (which also fix each key's type).
DEFAULTS: dict[str, object] = {
    "server.host": "0.0.0.0",
    "server.port": 8085,
    "server.read_timeout": 60,
    "zmq.unit_manager_host": "edge-unit-manager",
    "zmq.unit_manager_port": 19001,
    "zmq.timeout": 30,
    "jwt.secret": "",
    "ai.models.asr.model_name": "asr-model",
    "ai.models.emotion.model_name": "emotion-model",
    "ai.models.synthesis.model_name": "synthesis-model",
    "ai.request.max_single_delta_len": 2048,
    "ai.request.audio_stream_chunk_size": 512,
    "ai.request.audio_stream_chunk_delay_ms": 10,
}
PORT_KEYS = ("server.port", "zmq.unit_manager_port")
POSITIVE_KEYS = (
    "server.read_timeout",
    "zmq.timeout",
    "ai.request.max_single_delta_len",
    "ai.request.audio_stream_chunk_size",
)
NON_NEGATIVE_KEYS = ("ai.request.audio_stream_chunk_delay_ms",)


class ConfigError(Exception):
    """Settings the service cannot start with."""


def env_name(key: str) -> str:
    """Return the environment variable that overrides a key."""
    return key.replace(".", "_").upper()


def load(path: str, environ: Mapping[str, str]) -> dict[str, object]:
    """Read the file at `path`, apply overrides from `environ`, check and return the settings."""
    try:
        with open(path, encoding="utf-8") as handle:
            tree = yamlsubset.parse(handle.read())
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except yamlsubset.YamlError as err:
        raise ConfigError(f"cannot parse config file {path}: {err}") from None
    merged = {**DEFAULTS, **flatten(tree)}
    for key in merged:
        if environ.get(env_name(key)):
            merged[key] = environ[env_name(key)]
    settings = {key: coerce(key, merged[key]) for key in DEFAULTS}
    check(settings)
    return settings


def flatten(tree: Mapping, prefix: str = "") -> dict[str, object]:
    """Turn nested mappings into dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def coerce(key: str, value: object) -> object:
    """Convert a value from the file or the environment to the type of the key's default."""
    if isinstance(DEFAULTS[key], int):
        wrong = ConfigError(f"{key} (env {env_name(key)}) must be an integer, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise wrong
        try:
            return int(value)
        except ValueError:
            raise wrong from None
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        raise ConfigError(f"{key} (env {env_name(key)}) must be a string")
    return str(value)


def check(settings: Mapping[str, object]) -> None:
    """Refuse settings the service cannot run with; messages never include the secret."""
    for key in PORT_KEYS:
        if not 0 < settings[key] < 65536:
            raise ConfigError(f"{key} must be a port number (1-65535), got {settings[key]}")
    for key in POSITIVE_KEYS:
        if settings[key] <= 0:
            raise ConfigError(f"{key} must be positive, got {settings[key]}")
    for key in NON_NEGATIVE_KEYS:
        if settings[key] < 0:
            raise ConfigError(f"{key} must not be negative, got {settings[key]}")
    secret = settings["jwt.secret"]
    if not secret:
        raise ConfigError("jwt.secret is empty: set it in the config file or in JWT_SECRET")
    if len(secret) < MIN_JWT_SECRET_LENGTH:
        raise ConfigError(
            f"jwt.secret is shorter than {MIN_JWT_SECRET_LENGTH} characters ({len(secret)})"
        )
    if secret == PUBLISHED_EXAMPLE_JWT_SECRET:
        raise ConfigError("jwt.secret is the published example value: set a secret of your own")
