"""The state file: changes made through the API, kept across restarts.

What it holds: a partial config of the keys changed through ``PATCH /api/scaling`` and
``PATCH /api/config`` (providers keyed by name), with their latest values::

    {"format": 1, "note": "...",
     "changes": {"scaling": {"min": 1, "required": 5, "max": 5},
                 "manager": {"check_interval": 1.0},
                 "providers": {"mine": {"proxies": ["http://u:p@203.0.113.7:3128"]}}}}

Precedence at start: the config file, then these changes on top. A key changed through the
API keeps its API value across restarts even if the file is edited later (the start log
says which keys were restored and which differ from the file); every other key follows the
file, ``scaling`` bounds included: sending ``{"max": 5}`` pins ``max`` alone. ``required``
moves with the pool (wake and sleep): at start it is clamped into the restored
``[min, max]``, with a warning when it was set through the API; bounds that no longer fit
together (the file's ``min`` raised above an API ``max``) stop the start with an error naming
the file. Deleting the file returns to the config file alone.

Writing is atomic: a temporary file in the same folder, fsync, ``os.replace``, fsync of the
folder. A crash at any point leaves either the previous file or the new one, never a mix;
the temporary files are never read. The file is private (0600): proxy URLs and passwords
set through the API are in it.

A state file that cannot be read or does not make sense is an error naming the file: the
server refuses to start rather than silently drop what the operator set (the pool size
set to 0 to stop spending, say) and start from the file's values.

``StateStore`` does the blocking file work; ``StateKeeper`` holds the changes on the reactor
thread and runs each write in one dedicated thread (so writes stay in order and never wait
behind boto3 calls in the reactor's pool).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer

from .config import Config, ConfigError, deep_merge, from_dict, merge_scaling, to_dict

log = logging.getLogger(__name__)

STATE_FORMAT = 1
STATE_NOTE = ("Changes made through the scrapoxy-server API. At start they are applied over "
              "the config file; delete this file to start from the config file alone.")
SCALING_BOUNDS = ("min", "required", "max")


class StateFileError(ConfigError):
    """The state file cannot be read or applied; the message names the file."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__("", f"state file {path}: {problem}. Fix it, or delete it to start "
                             "from the config file alone (the changes made through the API "
                             "are then lost)")
        self.file = path


class StateWriteError(Exception):
    """A change is in force but could not be written to the state file."""


def default_state_path(config: Config, *, config_path: str | os.PathLike | None) -> Path:
    """``config.state_file`` if set; else ``NAME.state.json`` next to the config file; for
    the embedded default, ``$XDG_STATE_HOME/scrapoxy/state.json`` (``~/.local/state/...``)."""
    if config.state_file is not None:
        return Path(config.state_file).expanduser()
    if config_path is not None:
        path = Path(config_path)
        return path.with_name(path.stem + ".state.json")
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return Path(base) / "scrapoxy" / "state.json"


class StateStore:
    """The state file on disk. Blocking: call ``save`` off the reactor thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, Any]:
        """The recorded changes; ``{}`` when there is no file yet.

        Temporary files left by a crash in the middle of a write are removed: they were
        never the state (the previous file still is)."""
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            _remove(str(leftover))
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise StateFileError(self.path, f"cannot be read ({_reason(exc)})") from None
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise StateFileError(self.path, f"is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise StateFileError(self.path, f"is not a format {STATE_FORMAT} state file")
        changes = data.get("changes", {})
        if not isinstance(changes, dict):
            raise StateFileError(self.path, "'changes' must be a table")
        return changes

    def save(self, changes: dict[str, Any]) -> None:
        """Replace the file with ``changes``, atomically and durably."""
        payload = json.dumps({"format": STATE_FORMAT, "note": STATE_NOTE, "changes": changes},
                             indent=2, sort_keys=True, allow_nan=False).encode("utf-8") + b"\n"
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.",
                                        suffix=".tmp")
        except OSError as exc:
            raise StateWriteError(_unsaved(self.path, exc)) from None
        try:
            try:
                os.fchmod(fd, 0o600)
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, self.path)
        except OSError as exc:
            _remove(temp)
            raise StateWriteError(_unsaved(self.path, exc)) from None
        except BaseException:
            _remove(temp)
            raise
        _fsync_folder(folder)


class StateKeeper:
    """The changes made through the API, on the reactor thread, written off it.

    ``record(diff)`` merges a partial config (providers keyed by name) into the changes and
    returns a Deferred that fires once the file holds them (or fails with
    ``StateWriteError``). ``run_in_thread(fn, *args)`` returns a Deferred; one thread, so
    writes land in the order they were recorded.
    """

    def __init__(self, *, store: StateStore, changes: dict[str, Any],
                 run_in_thread: Callable[..., defer.Deferred]) -> None:
        self.store = store
        self._changes = copy.deepcopy(changes)
        self._run_in_thread = run_in_thread

    @property
    def changes(self) -> dict[str, Any]:
        return copy.deepcopy(self._changes)

    def record(self, diff: dict[str, Any]) -> defer.Deferred:
        if not diff:
            return defer.succeed(None)
        self._changes = copy.deepcopy(deep_merge(self._changes, diff))
        snapshot = copy.deepcopy(self._changes)

        def failed(failure: Any) -> Any:
            log.error("%s", failure.value)
            return failure

        return self._run_in_thread(self.store.save, snapshot).addErrback(failed)

    def record_scaling(self, scaling: dict[str, int], *, sent: Any) -> defer.Deferred:
        """Record the scaling values the API request named (``sent``), with their values
        in ``scaling`` (the manager's result), and bring the ones recorded before up to
        date: a recorded ``required`` follows bounds a later request moved."""
        recorded = self._changes.get("scaling", {})
        return self.record({"scaling": {key: scaling[key] for key in SCALING_BOUNDS
                                        if key in sent or key in recorded}})


# --- applying the changes at start -------------------------------------------------------


def restore(config: Config, changes: dict[str, Any], *, state_path: Path,
            source: str = "the config file's") -> Config:
    """``config`` with the recorded ``changes`` on top; logs what was restored.

    Raises ``StateFileError`` naming the file when the changes do not fit the config (a key
    that no longer exists, or values the file now contradicts: ``scaling.max`` set to 2
    through the API while the file's ``min`` became 3).
    """
    if not changes:
        return config
    patch = dict(changes)
    providers = patch.pop("providers", None)
    plain = to_dict(config, redact=False)
    if providers is not None:
        if not isinstance(providers, dict):
            raise StateFileError(state_path, "'providers' must be a table keyed by provider name")
        by_name = {p["name"]: i for i, p in enumerate(plain["providers"])}
        for name, provider_changes in providers.items():
            if name not in by_name:
                log.warning("state file %s: provider %r is not in the config any more; its "
                            "changes made through the API are ignored", state_path, name)
                continue
            index = by_name[name]
            plain["providers"][index] = deep_merge(plain["providers"][index], provider_changes)
    merged = deep_merge(plain, patch)
    if isinstance(patch.get("scaling"), dict) and isinstance(plain.get("scaling"), dict):
        merged["scaling"] = _restored_scaling(plain["scaling"], patch["scaling"], state_path)
    try:
        restored = from_dict(merged)
    except ConfigError as exc:
        raise StateFileError(state_path, f"the changes it holds do not fit the config: "
                                         f"{exc}") from None
    paths = leaf_paths(changes)
    log.info("restored %d setting(s) changed through the API from %s: %s", len(paths),
             state_path, ", ".join(paths))
    differing = [path for path in paths
                 if _at(to_dict(config, redact=False), path) != _at(to_dict(restored, redact=False), path)]
    if differing:
        log.warning("%s values for %s are overridden by the values set through the API "
                    "(delete %s to go back to them)", source, ", ".join(differing),
                    state_path)
    return restored


def _restored_scaling(configured: dict[str, Any], recorded: dict[str, Any],
                      state_path: Path) -> dict[str, Any]:
    """The file's scaling with the recorded one on top; ``required`` clamped into the bounds."""
    scaling = merge_scaling({**configured, **recorded}, {})
    if "required" in recorded and scaling["required"] != recorded["required"]:
        log.warning("state file %s: scaling.required %s set through the API is outside "
                    "[min, max] now; starting with %s", state_path, recorded["required"],
                    scaling["required"])
    return scaling


def leaf_paths(changes: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the values in a partial config (lists are values)."""
    out = []
    for key, value in changes.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if prefix == "" and key == "providers" and isinstance(value, dict):
            for name, sub in value.items():
                out.extend(leaf_paths(sub, f"providers[{name}]") if isinstance(sub, dict)
                           else [f"providers[{name}]"])
        elif isinstance(value, dict):
            out.extend(leaf_paths(value, path))
        else:
            out.append(path)
    return out


def _at(plain: dict[str, Any], path: str) -> Any:
    """The value at a ``leaf_paths`` path in ``to_dict`` output (providers by name)."""
    value: Any = plain
    for part in path.split("."):
        if part.startswith("providers[") and isinstance(value, dict):
            name = part[len("providers["):-1]
            value = next((p for p in value.get("providers", []) if p.get("name") == name), None)
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


def _unsaved(path: Path, exc: OSError) -> str:
    return (f"the change is in force but could not be saved to {path} ({_reason(exc)}); "
            "it will be lost at the next restart")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_folder(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
