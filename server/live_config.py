"""Changing the config of a running server (``PATCH /api/config``): pure functions.

A patch is a partial config, validated like the file. Its ``providers`` may be a list (as
``GET /api/config`` shows them: matched by position, same length) or a table keyed by
provider name (``{"providers": {"mine": {"proxies": [...]}}}``).

What can change live (``LIVE_KEYS``): the master's timeouts, allow/deny rules, access log
and scraper auth; the commander's stats window; the scaling; every manager setting; a
static provider's proxy list. Anything else (listening hosts and ports, provider types and
settings, the commander's credentials, TLS settings, the state file) needs a restart: a
patch that changes it is refused with a 400 naming the key, and changes nothing.

A URL sent back with the redaction mark as its password (``http://bob:***@host:3128``, as
the API shows it) means "this proxy, with the password it has": it is matched to the
current URL of the same user, host and port.
"""
from __future__ import annotations

import copy
from typing import Any

from .config import Config, ConfigError, deep_merge, from_dict, merge_scaling, to_dict
from .redaction import has_redacted_password, redact_url

# Dotted paths that may change while the server runs; a path covers everything under it.
LIVE_KEYS = (
    "master.connect_timeout", "master.idle_timeout", "master.wait_for_instance",
    "master.allow", "master.deny", "master.access_log", "master.auth",
    "commander.stats_window",
    "scaling",
    "manager",
)
# Provider keys that may change live, by provider type.
LIVE_PROVIDER_KEYS = {"static": ("proxies",)}
RESTART_MESSAGE = ("cannot change while the server runs (needs a restart): edit the config "
                   "file, then restart")


def patched(current: Config, patch: dict[str, Any]) -> Config:
    """The config ``patch`` asks for: validated, URL passwords restored, restart-only keys
    refused. Raises ``ConfigError`` naming the key path; ``current`` is not touched."""
    if not isinstance(patch, dict):
        raise ConfigError("", "the config patch must be an object")
    before = to_dict(current, redact=False)
    wanted = copy.deepcopy(patch)
    if "providers" in wanted:
        wanted["providers"] = _providers_patch(before["providers"], wanted["providers"])
    after_plain = copy.deepcopy(deep_merge(before, wanted))
    if isinstance(wanted.get("scaling"), dict):
        # As PATCH /api/scaling: a required not sent follows the moved bounds.
        after_plain["scaling"] = merge_scaling(before["scaling"], wanted["scaling"])
    _restore_redacted_urls(after_plain, before, "")
    after = from_dict(after_plain)
    for path in changed_paths(before, to_dict(after, redact=False)):
        if not _is_live(path, current):
            raise ConfigError(path, RESTART_MESSAGE)
    return after


def changed_paths(before: Any, after: Any, *, prefix: str = "") -> list[str]:
    """Key paths whose value differs (lists are compared whole, except the provider list,
    whose entries are compared key by key as ``providers[i].key``)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            out.extend(changed_paths(before.get(key), after.get(key), prefix=path))
        return out
    if prefix == "providers" and isinstance(before, list) and isinstance(after, list) \
            and len(before) == len(after):
        out = []
        for index, (old, new) in enumerate(zip(before, after)):
            out.extend(changed_paths(old, new, prefix=f"providers[{index}]"))
        return out
    return [] if before == after else [prefix]


def state_diff(before: Config, after: Config) -> dict[str, Any]:
    """What changed, as a partial config for the state file: providers keyed by name."""
    old, new = to_dict(before, redact=False), to_dict(after, redact=False)
    diff: dict[str, Any] = {}
    for path in changed_paths(old, new):
        if path.startswith("providers["):
            index_text, _, rest = path[len("providers["):].partition("].")
            entry = new["providers"][int(index_text)]
            _put(diff.setdefault("providers", {}).setdefault(entry["name"], {}), rest,
                 _at(entry, rest))
        else:
            _put(diff, path, _at(new, path))
    return diff


def _is_live(path: str, current: Config) -> bool:
    if path.startswith("providers["):
        index_text, _, rest = path[len("providers["):].partition("].")
        provider = current.providers[int(index_text)]
        key = rest.split(".", 1)[0].split("[", 1)[0]
        return key in LIVE_PROVIDER_KEYS.get(provider.type, ())
    return any(path == key or path.startswith(key + ".") for key in LIVE_KEYS)


def _providers_patch(current: list[dict[str, Any]], patch: Any) -> list[dict[str, Any]]:
    """The patch's providers, as the full list with each entry merged onto its provider."""
    merged = copy.deepcopy(current)
    if isinstance(patch, dict):
        names = {p["name"]: i for i, p in enumerate(current)}
        for name, changes in patch.items():
            if name not in names:
                raise ConfigError(f"providers.{str(name)[:64]}",
                                  f"no provider named {str(name)[:64]!r} (known: "
                                  f"{', '.join(names)}); adding providers needs a restart")
            if not isinstance(changes, dict):
                raise ConfigError(f"providers.{name}", "must be a table")
            _refuse_identity_change(current[names[name]], changes, f"providers.{name}")
            merged[names[name]] = deep_merge(current[names[name]], changes)
        return merged
    if isinstance(patch, list):
        if len(patch) != len(current):
            raise ConfigError("providers", f"has {len(current)} provider(s); adding or removing "
                                           f"providers {RESTART_MESSAGE}")
        for index, changes in enumerate(patch):
            if not isinstance(changes, dict):
                raise ConfigError(f"providers[{index}]", "must be a table")
            _refuse_identity_change(current[index], changes, f"providers[{index}]")
            merged[index] = deep_merge(current[index], changes)
        return merged
    raise ConfigError("providers", "must be a list (as GET /api/config shows it) or a table "
                                   "keyed by provider name")


def _refuse_identity_change(current: dict[str, Any], changes: dict[str, Any], path: str) -> None:
    # Checked before validation: a new type would otherwise be reported as unknown keys.
    for key in ("type", "name"):
        if key in changes and changes[key] != current[key]:
            raise ConfigError(f"{path}.{key}", RESTART_MESSAGE)


def _restore_redacted_urls(value: Any, before: Any, path: str) -> None:
    """Put the current password back in every URL sent with ``***`` as its password."""
    if isinstance(value, dict):
        for key, item in value.items():
            old = before.get(key) if isinstance(before, dict) else None
            sub = f"{path}.{key}" if path else key
            if isinstance(item, str):
                value[key] = _unredacted(item, old, sub)
            else:
                _restore_redacted_urls(item, old, sub)
    elif isinstance(value, list):
        olds = before if isinstance(before, list) else []
        for index, item in enumerate(value):
            sub = f"{path}[{index}]"
            if isinstance(item, str):
                value[index] = _unredacted(item, olds, sub)
            else:
                _restore_redacted_urls(item, olds[index] if index < len(olds) else None, sub)


def _unredacted(url: str, old: Any, path: str) -> str:
    if not has_redacted_password(url):
        return url
    candidates = old if isinstance(old, list) else [old]
    for candidate in candidates:
        if isinstance(candidate, str) and candidate != url and redact_url(candidate) == url:
            return candidate
    raise ConfigError(path, "the password is the redaction mark '***' and no current URL "
                            "matches this user, host and port: send the real password")


def _at(plain: Any, path: str) -> Any:
    for part in path.split("."):
        plain = plain[part]
    return plain


def _put(target: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = copy.deepcopy(value)
