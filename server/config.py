"""The configuration: nested frozen dataclasses, loaded from one TOML file and validated.

Every error names the key path (``scaling.min``, ``providers[0].type``) so a user knows what
to fix, and loading happens before anything touches a cloud. Times are in seconds. A string
value of the form ``env:NAME`` is read from the environment variable NAME, so secrets need
not sit in the file.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .cluster.listen import reuseport_supported
from .redaction import is_secret_path, redact_text, redact_value


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
    # Master processes sharing the port (SO_REUSEPORT): this one plus processes - 1 workers.
    # Worth it only when one master saturates a core and spare cores exist.
    processes: int = 1


@dataclass(frozen=True)
class CommanderConfig:
    host: str = "127.0.0.1"
    port: int = 8889
    username: str = "admin"
    # None: a password is generated at start and printed once.
    password: str | None = field(default=None, repr=False)
    allow_public: bool = False
    # Seconds of one-second stats samples kept for GET /api/stats and the GUI's charts.
    stats_window: float = 900.0


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
    merged = deep_merge(to_dict(config, redact=False), changes)
    return from_dict(merged)


def to_dict(config: Any, *, redact: bool = True) -> Any:
    """Plain data for JSON or TOML. With ``redact``, every secret is replaced by ``"***"``:
    values under a secret key, and passwords inside URLs (a static proxy's
    ``http://user:pass@host:port`` shows as ``http://user:***@host:port``)."""
    plain = _plain(config)
    return redact_value(plain) if redact else plain


def _plain(config: Any) -> Any:
    if dataclasses.is_dataclass(config):
        return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple):
        return [_plain(v) for v in config]
    return config


def deep_merge(base: Any, changes: Any) -> Any:
    """``base`` with ``changes`` applied: tables merge key by key, anything else (lists
    included) is replaced. Neither argument is modified."""
    if isinstance(base, dict) and isinstance(changes, dict):
        out = dict(base)
        for key, value in changes.items():
            out[key] = deep_merge(base.get(key), value) if key in base else value
        return out
    return changes


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(path, f"must be a table, got {_show(data, path)}")
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
            raise ConfigError(path, f"must be a list, got {_show(value, path)}")
        return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be true or false, got {_show(value, path)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"must be an integer, got {_show(value, path)}")
        return value
    if hint is float:
        # Every float of the config is a duration. NaN and infinities (TOML's nan/inf, JSON's
        # 1e400) would pass every comparison check and break timers: refuse them here.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"must be a number of seconds, got {_show(value, path)}")
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds):
            raise ConfigError(path, f"must be a finite number of seconds, got {_show(value, path)}")
        return seconds
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, got {_show(value, path)}")
        return _from_env(value, path)
    raise ConfigError(path, f"unsupported type {hint!r}")


def _providers(value: Any, path: str) -> tuple:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, "must be a non-empty list of provider tables")
    out = []
    for i, item in enumerate(value):
        item_path = f"{path}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(item_path, f"must be a table, got {_show(item, item_path)}")
        kind = item.get("type")
        if kind not in PROVIDER_TYPES:
            raise ConfigError(
                _join(item_path, "type"),
                f"unknown provider type {_show(kind, item_path)} (known: {', '.join(PROVIDER_TYPES)})",
            )
        out.append(_build(PROVIDER_TYPES[kind], item, item_path))
    return tuple(out)


def _from_env(value: str, path: str) -> str:
    if not value.startswith("env:"):
        return value
    name = value[4:]
    if not name:
        raise ConfigError(path, "'env:' needs the name of an environment variable (env:NAME)")
    if name not in os.environ:
        raise ConfigError(path, f"environment variable {name} is not set")
    if not os.environ[name]:
        raise ConfigError(path, f"environment variable {name} is empty")
    return os.environ[name]


def _show(value: Any, path: str) -> str:
    """``value`` for an error message: never a secret (under a secret key only its type is
    named; URL passwords are masked), and short."""
    if is_secret_path(path):
        return f"a value of type {type(value).__name__}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10 ** 30:
        return "a huge integer"
    text = redact_text(repr(value))
    return text if len(text) <= 40 else text[:37] + "..."


# --- semantic checks -----------------------------------------------------------------

MAX_INSTANCES = 10_000
# The shortest interval or timeout: below it a loop spins (1e-9 s is a busy loop) or every
# connection times out before it could succeed.
MIN_INTERVAL = 0.1
# The longest duration accepted anywhere: a year. Anything longer is a typo (or 1e300).
MAX_SECONDS = 365 * 24 * 3600.0
# The stats window keeps one sample per second in memory: an hour at most (longer history
# is what /metrics and Prometheus are for).
MIN_STATS_WINDOW = 10.0
MAX_STATS_WINDOW = 3600.0
MAX_DEAD_AFTER_FAILURES = 1000
MAX_MASTER_PROCESSES = 64

# Every duration of the config, with its smallest accepted value (0 = "off" or "at once").
DURATION_MINIMUMS: dict[str, float] = {
    "master.connect_timeout": MIN_INTERVAL,
    "master.idle_timeout": MIN_INTERVAL,
    "master.wait_for_instance": 0.0,
    "scaling.downscale_delay": 0.0,
    "manager.check_interval": MIN_INTERVAL,
    "manager.alive_check_interval": MIN_INTERVAL,
    "manager.check_timeout": MIN_INTERVAL,
    "manager.dead_after": MIN_INTERVAL,
    "manager.start_timeout": MIN_INTERVAL,
    "manager.drain_grace": 0.0,
    "manager.autorestart.min": 0.0,
    "manager.autorestart.max": 0.0,
}


def _value_at(config: Config, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def validate(config: Config) -> None:
    _check_port("master.port", config.master.port)
    _check_port("commander.port", config.commander.port)
    for path, minimum in DURATION_MINIMUMS.items():
        _check_seconds(path, _value_at(config, path), minimum=minimum)
    _check_seconds("commander.stats_window", config.commander.stats_window,
                   minimum=MIN_STATS_WINDOW, maximum=MAX_STATS_WINDOW)
    if not 1 <= config.master.processes <= MAX_MASTER_PROCESSES:
        raise ConfigError("master.processes",
                          f"must be in 1..{MAX_MASTER_PROCESSES}, "
                          f"got {_show(config.master.processes, '')}")
    if config.master.processes > 1 and not reuseport_supported():
        raise ConfigError("master.processes", "needs SO_REUSEPORT, which this system lacks")
    if config.master.auth is not None:
        _check_scraper_username(config.master.auth.username)
    _check_basic_username("commander.username", config.commander.username)
    validate_scaling(
        {"min": config.scaling.min, "required": config.scaling.required, "max": config.scaling.max},
        prefix="scaling.",
    )
    m = config.manager
    if not 1 <= m.dead_after_failures <= MAX_DEAD_AFTER_FAILURES:
        raise ConfigError("manager.dead_after_failures",
                          f"must be in 1..{MAX_DEAD_AFTER_FAILURES}, "
                          f"got {_show(m.dead_after_failures, '')}")
    if m.check_url is not None and not m.check_url.startswith("http://"):
        raise ConfigError("manager.check_url",
                          f"must be an http:// URL, got {_show(m.check_url, 'manager.check_url')}")
    if m.autorestart.max < m.autorestart.min:
        raise ConfigError("manager.autorestart.max", "must be >= manager.autorestart.min")
    names = set()
    for i, provider in enumerate(config.providers):
        if provider.name in names:
            raise ConfigError(f"providers[{i}].name", f"duplicate provider name {provider.name!r}")
        names.add(provider.name)
        if isinstance(provider, StaticProviderConfig):
            from scrapoxy_server.providers.static import parse_proxy_url

            _check_seconds(f"providers[{i}].bench", provider.bench, minimum=0.0)
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
    if config.master.ca_file == "":
        raise ConfigError("master.ca_file", "must not be empty: give a PEM file, or remove the key")
    if config.commander.password == "":
        raise ConfigError("commander.password",
                          "must not be empty: set a password, or remove the key to have one "
                          "generated at each start")
    if config.master.ca_file is not None:
        from scrapoxy_server.master.tls import TlsSetupError, client_context

        try:
            client_context(verify=True, ca_file=config.master.ca_file)
        except TlsSetupError as exc:
            raise ConfigError("master.ca_file", str(exc)) from None
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


def _check_basic_username(path: str, username: str) -> None:
    """HTTP Basic sends ``user:password`` and splits it at the first colon (RFC 7617): a
    username with a colon could never log in, and every client would be locked out."""
    if ":" in username:
        raise ConfigError(path, "must not contain ':' (HTTP Basic splits the username from "
                                "the password at the first colon, RFC 7617)")


def _check_scraper_username(username: str) -> None:
    from scrapoxy_server.master.auth import SESSION_MARK

    if not username:
        raise ConfigError("master.auth.username", "must not be empty")
    _check_basic_username("master.auth.username", username)
    if SESSION_MARK in username:
        # The master reads USER;session=TOKEN as a session token: such a user never matches.
        raise ConfigError("master.auth.username",
                          f"must not contain {SESSION_MARK!r} (it marks a session token)")


def _validate_awsec2(provider: AwsEc2ProviderConfig, path: str) -> None:
    from scrapoxy_server.providers.awsec2_userdata import SAFE_SECRET_RULE, is_safe_secret

    _check_port(f"{path}.port", provider.port)
    # Written into the instance's proxy config: checked here too, so the error names the key.
    if not is_safe_secret(provider.instance_username):
        raise ConfigError(f"{path}.instance_username", f"must be {SAFE_SECRET_RULE}")
    if provider.instance_password is not None and not is_safe_secret(provider.instance_password):
        raise ConfigError(f"{path}.instance_password", f"must be {SAFE_SECRET_RULE}")
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
        key = f"{path}.allowed_cidr"
        raise ConfigError(key, "must be a CIDR such as 198.51.100.7/32, got "
                               f"{_show(provider.allowed_cidr, key)}") from None
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


def merge_scaling(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``current`` with ``changes`` applied, not yet validated. A ``required`` the changes do
    not set follows moved bounds: lowering ``max`` to 3 while the pool is awake at 4 takes
    ``required`` to 3, instead of refusing the change for a value the user never sent."""
    merged = {**current, **changes}
    low, high, required = merged.get("min"), merged.get("max"), merged.get("required")
    if "required" not in changes and low is not None and high is not None \
            and all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high, required)) \
            and low <= high:
        merged["required"] = min(max(required, low), high)
    return merged


def validate_scaling(values: dict[str, Any], *, prefix: str = "") -> None:
    """Check a full {min, required, max}; raises ConfigError naming the field."""
    for key in ("min", "required", "max"):
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(prefix + key, f"must be an integer, got {_show(value, prefix + key)}")
        if value < 0:
            raise ConfigError(prefix + key, f"must not be negative, got {_show(value, '')}")
        if value > MAX_INSTANCES:
            raise ConfigError(prefix + key,
                              f"must be at most {MAX_INSTANCES}, got {_show(value, '')}")
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
        raise ConfigError(path, f"must be a TCP port 0..65535, got {_show(port, '')}")


def _check_seconds(path: str, value: float, *, minimum: float,
                   maximum: float = MAX_SECONDS) -> None:
    # _convert already refused NaN and infinities; this is the range.
    if not minimum <= value <= maximum:
        raise ConfigError(path, f"must be between {_seconds(minimum)} and {_seconds(maximum)} "
                                f"seconds, got {_seconds(value)}")


def _seconds(value: float) -> str:
    """31536000 as "31,536,000", not "3.1536e+07"; 0.1 as "0.1"."""
    return f"{value:,.0f}" if 1000 <= value < 1e15 and value == int(value) else f"{value:g}"
