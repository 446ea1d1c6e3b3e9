"""Every ``SCRAPOXY_*`` setting, read once into a typed value.

Each middleware's ``from_crawler`` calls :func:`read_settings` and hands plain values to its
``__init__``. The original Scrapoxy's names (``PROXY``, ``API_SCRAPOXY``,
``API_SCRAPOXY_PASSWORD``) still work, with a ``ScrapyDeprecationWarning``, when the new name is
not set. Units are in the field names (``_s`` = seconds).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from scrapy.exceptions import ScrapyDeprecationWarning

HTTPS_MODES = ("location", "connect")

# new name -> the original Scrapoxy's name
DEPRECATED_NAMES = {
    "SCRAPOXY_MASTER": "PROXY",
    "SCRAPOXY_API": "API_SCRAPOXY",
    "SCRAPOXY_PASSWORD": "API_SCRAPOXY_PASSWORD",
}


@dataclass(frozen=True)
class ScrapoxySettings:
    enabled: bool
    master: str | None  # proxy URL; credentials percent-encoded in it
    https_mode: str
    connect_lanes: int  # CONNECT mode: tokens shared by requests without a session
    connect_lane_ttl_s: float
    api: str | None  # commander base URL; None turns off scaling, waiting and instance stops
    username: str | None  # commander credentials
    password: str | None
    api_timeout_s: float
    wait_enabled: bool
    wait_timeout_s: float
    backoff_base_s: float
    backoff_max_s: float
    scale_on_open: bool
    scale_on_close: bool
    no_instance_retry_times: int
    ban_enabled: bool
    ban_policy: str
    ban_retry_times: int
    ban_stop_instance: bool


def _with_fallback(settings: Any, name: str) -> Any:
    value = settings.get(name)
    if value not in (None, ""):
        return value
    old = DEPRECATED_NAMES.get(name)
    if old is not None and settings.get(old) not in (None, ""):
        warnings.warn(f"The {old} setting is deprecated, use {name} instead",
                      ScrapyDeprecationWarning, stacklevel=3)
        return settings.get(old)
    return None


def read_settings(settings: Any) -> ScrapoxySettings:
    """Read the crawler's settings. Raises ``ValueError`` naming the setting that is wrong."""
    https_mode = str(settings.get("SCRAPOXY_HTTPS_MODE") or "location").lower()
    if https_mode not in HTTPS_MODES:
        raise ValueError(f"SCRAPOXY_HTTPS_MODE must be one of {HTTPS_MODES}, got {https_mode!r}")
    result = ScrapoxySettings(
        enabled=settings.getbool("SCRAPOXY_ENABLED", True),
        master=_with_fallback(settings, "SCRAPOXY_MASTER"),
        https_mode=https_mode,
        connect_lanes=settings.getint("SCRAPOXY_CONNECT_LANES", 8),
        connect_lane_ttl_s=settings.getfloat("SCRAPOXY_CONNECT_LANE_TTL", 60.0),
        api=_with_fallback(settings, "SCRAPOXY_API"),
        username=settings.get("SCRAPOXY_USERNAME") or None,
        password=_with_fallback(settings, "SCRAPOXY_PASSWORD"),
        api_timeout_s=settings.getfloat("SCRAPOXY_API_TIMEOUT", 10.0),
        wait_enabled=settings.getbool("SCRAPOXY_WAIT_ENABLED", True),
        wait_timeout_s=settings.getfloat("SCRAPOXY_WAIT_TIMEOUT", 300.0),
        backoff_base_s=settings.getfloat("SCRAPOXY_BACKOFF_BASE", 0.5),
        backoff_max_s=settings.getfloat("SCRAPOXY_BACKOFF_MAX", 30.0),
        scale_on_open=settings.getbool("SCRAPOXY_SCALE_ON_OPEN", True),
        scale_on_close=settings.getbool("SCRAPOXY_SCALE_ON_CLOSE", True),
        no_instance_retry_times=settings.getint("SCRAPOXY_NO_INSTANCE_RETRY_TIMES", 20),
        ban_enabled=settings.getbool("SCRAPOXY_BAN_ENABLED", True),
        ban_policy=settings.get("SCRAPOXY_BAN_POLICY") or "scrapoxy_scrapy.policy.BanPolicy",
        ban_retry_times=settings.getint("SCRAPOXY_BAN_RETRY_TIMES", 5),
        ban_stop_instance=settings.getbool("SCRAPOXY_BAN_STOP_INSTANCE", True),
    )
    for name, value in (("SCRAPOXY_CONNECT_LANES", result.connect_lanes),
                        ("SCRAPOXY_CONNECT_LANE_TTL", result.connect_lane_ttl_s),
                        ("SCRAPOXY_API_TIMEOUT", result.api_timeout_s),
                        ("SCRAPOXY_BACKOFF_BASE", result.backoff_base_s),
                        ("SCRAPOXY_BACKOFF_MAX", result.backoff_max_s),
                        ("SCRAPOXY_NO_INSTANCE_RETRY_TIMES", result.no_instance_retry_times),
                        ("SCRAPOXY_BAN_RETRY_TIMES", result.ban_retry_times)):
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")
    return result
