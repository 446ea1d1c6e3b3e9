"""The configuration: nested frozen dataclasses, loaded from one TOML file and validated.

Every error names the key path (``scaling.min``, ``providers[0].type``) so a user knows what
to fix, and loading happens before anything touches a cloud. Times are in seconds. A string
value of the form ``env:NAME`` is read from the environment variable NAME, so secrets need
not sit in the file.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A bad configuration value; ``path`` is the dotted key path."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


@dataclass(frozen=True)
class ScraperAuth:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class MasterConfig:
    host: str = "127.0.0.1"
    port: int = 8888
    # Without scraper auth the master refuses to bind beyond loopback unless this is true.
    allow_public: bool = False
    auth: ScraperAuth | None = None
    connect_timeout: float = 10.0
    # Longest silence from an instance or target, once connected, before a 504.
    idle_timeout: float = 60.0
    # How long a request waits for an alive instance while the pool wakes, before a 503.
    wait_for_instance: float = 30.0
    # Host patterns (fnmatch, e.g. "*.example.com"); deny wins over allow; empty allow = all.
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    # TLS to targets in HTTPS-by-header mode: verify certificates, trusting the system store
    # plus ca_file (a PEM bundle) when given.
    tls_verify: bool = True
    ca_file: str | None = None
    # One log line per request (logger "scrapoxy.access"): client, method, target, instance,
    # status, error, bytes each way, duration.
    access_log: bool = True


@dataclass(frozen=True)
class CommanderConfig:
    host: str = "127.0.0.1"
    port: int = 8889
    username: str = "admin"
    # None: a password is generated at start and printed once.
    password: str | None = field(default=None, repr=False)
    allow_public: bool = False


@dataclass(frozen=True)
class ScalingConfig:
    min: int = 3
    required: int = 3
    max: int = 3
    # Seconds without a request through the master before required drops to min.
    downscale_delay: float = 600.0


@dataclass(frozen=True)
class AutorestartConfig:
    """Living limit of an instance, drawn in [min, max] seconds; 0 and 0 disable it."""

    min: float = 0.0
    max: float = 0.0


@dataclass(frozen=True)
class ManagerConfig:
    check_interval: float = 2.0
    alive_check_interval: float = 2.0
    # URL fetched through each instance; None: the commander's own /ip echo on loopback.
    check_url: str | None = None
    check_timeout: float = 5.0
    # An instance that was alive is dead after this many failed checks in a row...
    dead_after_failures: int = 3
    # ...or after this many seconds without a passing check.
    dead_after: float = 30.0
    # An instance never alive this long after it appeared is replaced.
    start_timeout: float = 60.0
    autorestart: AutorestartConfig = AutorestartConfig()
    # Seconds a retiring instance may finish in-flight requests before it is terminated.
    drain_grace: float = 30.0
    # Terminate the instances this server created when it shuts down.
    terminate_on_shutdown: bool = True


@dataclass(frozen=True)
class LocalProviderConfig:
    """``scrapoxy-instance`` processes on loopback, each egressing from its own 127.0.0.N."""

    type: str = "local"
    name: str = "local"
    # Source addresses are 127.0.0.N for N from first_source_octet upwards.
    first_source_octet: int = 2
    # Command that starts an instance; None: this Python's scrapoxy_server.instance.
    command: tuple[str, ...] | None = None


@dataclass(frozen=True)
class StaticProviderConfig:
    """Proxies the user already has, as URLs ``http://user:pass@host:port``."""

    type: str = "static"
    name: str = "static"
    proxies: tuple[str, ...] = ()
    # Seconds a dead proxy stays benched before it is tried again.
    bench: float = 60.0


@dataclass(frozen=True)
class AwsEc2ProviderConfig:
    type: str = "awsec2"
    name: str = "awsec2"
    region: str = "us-east-1"
    instance_type: str = "t3.nano"
    # None: the latest stock Ubuntu image, looked up at start.
    image_id: str | None = None
    proxy: str = "tinyproxy"
    port: int = 3128
    security_group_id: str | None = None
    create_security_group: bool = False
    subnet_id: str | None = None
    key_name: str | None = None
    spot: bool = False
    tag_key: str = "scrapoxy"
    # Marks the instances this server created: it lists and terminates only those. None:
    # "scrapoxy-<server id>", the id generated once and kept next to the config file
    # (``server_id``), so two servers in one account never adopt each other's instances.
    tag_value: str | None = None
    # Instance proxy credentials; None: generated.
    instance_username: str = "scrapoxy"
    instance_password: str | None = field(default=None, repr=False)
    # Required: the only addresses the instances' proxy port accepts, i.e. the master's public
    # address ("198.51.100.7/32"). "0.0.0.0/0" must be written out to open it to everyone.
    allowed_cidr: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    endpoint_url: str | None = None


ProviderConfig = LocalProviderConfig | StaticProviderConfig | AwsEc2ProviderConfig
PROVIDER_TYPES: dict[str, type] = {
    "local": LocalProviderConfig,
    "static": StaticProviderConfig,
    "awsec2": AwsEc2ProviderConfig,
}
SECRET_KEYS = frozenset({"password", "instance_password", "secret_access_key", "access_key_id"})


@dataclass(frozen=True)
class Config:
    master: MasterConfig = MasterConfig()
    commander: CommanderConfig = CommanderConfig()
    scaling: ScalingConfig = ScalingConfig()
    manager: ManagerConfig = ManagerConfig()
    providers: tuple[ProviderConfig, ...] = (LocalProviderConfig(),)
    # Where changes made through the API are kept across restarts; None: next to the config
    # file, or in the user's state folder for the embedded default.
    state_file: str | None = None


# --- loading -------------------------------------------------------------------------


def load_file(path: str | os.PathLike) -> Config:
    """Read and validate a TOML config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path} is not valid TOML: {exc}") from None
    return from_dict(data)


def from_dict(data: dict[str, Any]) -> Config:
    config = _build(Config, data, "")
    validate(config)
    return config


def merge(config: Config, changes: dict[str, Any]) -> Config:
    """Apply a partial dict (as sent to ``PATCH /api/config``) and validate the result."""
    merged = _deep_merge(to_dict(config, redact=False), changes)
    return from_dict(merged)


def to_dict(config: Any, *, redact: bool = True) -> Any:
    """Plain data for JSON or TOML; secrets replaced by ``"***"`` when ``redact``."""
    if dataclasses.is_dataclass(config):
        out = {}
        for f in dataclasses.fields(config):
            value = getattr(config, f.name)
            if redact and f.name in SECRET_KEYS and value is not None:
                out[f.name] = "***"
            else:
                out[f.name] = to_dict(value, redact=redact)
        return out
    if isinstance(config, tuple):
        return [to_dict(v, redact=redact) for v in config]
    return config


def _deep_merge(base: Any, changes: Any) -> Any:
    if isinstance(base, dict) and isinstance(changes, dict):
        out = dict(base)
        for key, value in changes.items():
            out[key] = _deep_merge(base.get(key), value) if key in base else value
        return out
    return changes


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(path, f"must be a table, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(_join(path, key), f"unknown key (known: {', '.join(sorted(names))})")
    kwargs = {key: _convert(hints[key], value, _join(path, key)) for key, value in data.items()}
    return cls(**kwargs)


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Config.__annotations__.get("providers") or (
        origin is tuple and args and args[0] is ProviderConfig
    ):
        return _providers(value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(non_none[0], value, path)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(path, f"must be a list, got {_show(value)}")
        return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"must be an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"must be a number of seconds, got {_show(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, got {_show(value)}")
        return _from_env(value, path)
    raise ConfigError(path, f"unsupported type {hint!r}")


def _providers(value: Any, path: str) -> tuple:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, "must be a non-empty list of provider tables")
    out = []
    for i, item in enumerate(value):
        item_path = f"{path}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(item_path, f"must be a table, got {_show(item)}")
        kind = item.get("type")
        if kind not in PROVIDER_TYPES:
            raise ConfigError(
                _join(item_path, "type"),
                f"unknown provider type {_show(kind)} (known: {', '.join(PROVIDER_TYPES)})",
            )
        out.append(_build(PROVIDER_TYPES[kind], item, item_path))
    return tuple(out)


def _from_env(value: str, path: str) -> str:
    if not value.startswith("env:"):
        return value
    name = value[4:]
    if name not in os.environ:
        raise ConfigError(path, f"environment variable {name} is not set")
    return os.environ[name]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- semantic checks -----------------------------------------------------------------

MAX_INSTANCES = 10_000


def validate(config: Config) -> None:
    _check_port("master.port", config.master.port)
    _check_port("commander.port", config.commander.port)
    for name in ("connect_timeout", "idle_timeout"):
        _check_positive(f"master.{name}", getattr(config.master, name))
    _check_non_negative("master.wait_for_instance", config.master.wait_for_instance)
    if config.master.auth is not None and not config.master.auth.username:
        raise ConfigError("master.auth.username", "must not be empty")
    validate_scaling(
        {"min": config.scaling.min, "required": config.scaling.required, "max": config.scaling.max},
        prefix="scaling.",
    )
    _check_non_negative("scaling.downscale_delay", config.scaling.downscale_delay)
    m = config.manager
    for name in ("check_interval", "alive_check_interval", "check_timeout", "dead_after",
                 "start_timeout"):
        _check_positive(f"manager.{name}", getattr(m, name))
    _check_non_negative("manager.drain_grace", m.drain_grace)
    if m.dead_after_failures < 1:
        raise ConfigError("manager.dead_after_failures", "must be at least 1")
    if m.check_url is not None and not m.check_url.startswith("http://"):
        raise ConfigError("manager.check_url", f"must be an http:// URL, got {_show(m.check_url)}")
    _check_non_negative("manager.autorestart.min", m.autorestart.min)
    if m.autorestart.max < m.autorestart.min:
        raise ConfigError("manager.autorestart.max", "must be >= manager.autorestart.min")
    names = set()
    for i, provider in enumerate(config.providers):
        if provider.name in names:
            raise ConfigError(f"providers[{i}].name", f"duplicate provider name {provider.name!r}")
        names.add(provider.name)
        if isinstance(provider, StaticProviderConfig):
            from scrapoxy_server.providers.static import parse_proxy_url

            for j, url in enumerate(provider.proxies):
                try:
                    parse_proxy_url(url)
                except ValueError as exc:
                    raise ConfigError(f"providers[{i}].proxies[{j}]", str(exc)) from None
        if isinstance(provider, LocalProviderConfig) and not 1 <= provider.first_source_octet <= 254:
            raise ConfigError(f"providers[{i}].first_source_octet", "must be in 1..254")
        if isinstance(provider, AwsEc2ProviderConfig):
            _validate_awsec2(provider, f"providers[{i}]")
    _check_reachable_check_url(config)
    if not is_loopback(config.master.host) and config.master.auth is None and not config.master.allow_public:
        raise ConfigError(
            "master.host",
            f"{config.master.host} is beyond loopback and master.auth is not set: an open proxy "
            "is abused within hours. Set master.auth, or master.allow_public = true.",
        )
    if (not is_loopback(config.commander.host) and not config.commander.password
            and not config.commander.allow_public):
        raise ConfigError(
            "commander.host",
            f"{config.commander.host} is beyond loopback and commander.password is not set. "
            "Set commander.password, or commander.allow_public = true.",
        )


def _validate_awsec2(provider: AwsEc2ProviderConfig, path: str) -> None:
    _check_port(f"{path}.port", provider.port)
    if provider.proxy not in ("tinyproxy", "squid"):
        raise ConfigError(f"{path}.proxy", "must be 'tinyproxy' or 'squid'")
    if provider.allowed_cidr is None:
        raise ConfigError(
            f"{path}.allowed_cidr",
            "is required: the master's public address as a CIDR (e.g. \"198.51.100.7/32\"), "
            "the only source the instances' proxy port will accept. Write \"0.0.0.0/0\" to "
            "open it to the whole internet (instance credentials still required).")
    try:
        ipaddress.ip_network(provider.allowed_cidr, strict=False)
    except ValueError:
        raise ConfigError(f"{path}.allowed_cidr",
                          f"must be a CIDR such as 198.51.100.7/32, got "
                          f"{_show(provider.allowed_cidr)}") from None
    if provider.tag_value is not None and not provider.tag_value.strip():
        raise ConfigError(f"{path}.tag_value", "must not be empty")


def _check_reachable_check_url(config: Config) -> None:
    """Instances that do not run on this machine cannot reach its loopback: with the default
    check URL (the commander's /ip on 127.0.0.1) every one of them would fail its checks and be
    replaced every start_timeout, forever (and on a cloud, billed)."""
    remote = next(((i, p) for i, p in enumerate(config.providers) if _runs_elsewhere(p)), None)
    if remote is None:
        return
    index, provider = remote
    check_url = config.manager.check_url
    why = (f"providers[{index}] ({provider.type} {provider.name!r}) has instances that are not "
           "on this machine, and they cannot reach this machine's loopback")
    if check_url is None:
        raise ConfigError(
            "manager.check_url",
            f"must be set: {why}. Set it to a URL every instance can reach that answers the "
            "caller's IP, e.g. \"http://checkip.amazonaws.com/\".")
    host = urlsplit(check_url).hostname or ""
    if host == "localhost" or is_loopback(host):
        raise ConfigError("manager.check_url", f"must not be a loopback address: {why}.")


def _runs_elsewhere(provider: ProviderConfig) -> bool:
    if isinstance(provider, AwsEc2ProviderConfig):
        return True
    if isinstance(provider, StaticProviderConfig):
        from scrapoxy_server.providers.static import parse_proxy_url

        return any(not is_loopback(parse_proxy_url(url)[0].hostname) for url in provider.proxies)
    return False


def validate_scaling(values: dict[str, Any], *, prefix: str = "") -> None:
    """Check a full {min, required, max}; raises ConfigError naming the field."""
    for key in ("min", "required", "max"):
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(prefix + key, f"must be an integer, got {_show(value)}")
        if value < 0:
            raise ConfigError(prefix + key, f"must not be negative, got {value}")
        if value > MAX_INSTANCES:
            raise ConfigError(prefix + key, f"must be at most {MAX_INSTANCES}, got {value}")
    if values["min"] > values["max"]:
        raise ConfigError(prefix + "min", f"min ({values['min']}) must not exceed max ({values['max']})")
    if not values["min"] <= values["required"] <= values["max"]:
        raise ConfigError(
            prefix + "required",
            f"required ({values['required']}) must be between min ({values['min']}) and max ({values['max']})",
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_port(path: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(path, f"must be a TCP port 0..65535, got {port}")


def _check_positive(path: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(path, f"must be positive, got {value}")


def _check_non_negative(path: str, value: float) -> None:
    if value < 0:
        raise ConfigError(path, f"must not be negative, got {value}")
