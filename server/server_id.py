"""A server's own id, generated once and kept next to its config file.

Cloud instances are found by tag. With one fixed default tag, two servers in one AWS account
(two teams, or staging and production) would each list, adopt and terminate the other's
instances. So when an ``awsec2`` provider leaves ``tag_value`` unset, it becomes
``scrapoxy-<server id>``, where the id is random, generated at the first start and kept in
``<config file>.server-id``: the same server finds its instances again after a restart, and a
copy of the config elsewhere (without that file) gets an id of its own.

This is deliberately its own small file, not part of the state the commander persists: losing
the API's state must never make the server forget which instances are its own.
"""
from __future__ import annotations

import dataclasses
import os
import re
import secrets
from pathlib import Path

from .config import AwsEc2ProviderConfig, Config, ConfigError

SUFFIX = ".server-id"
_VALID = re.compile(r"[0-9a-f]{8,64}")


def server_id_path(config_path: str | os.PathLike) -> Path:
    path = Path(config_path)
    return path.with_name(path.name + SUFFIX)


def load_or_create(path: Path) -> str:
    """The id stored at ``path``; a new one is generated and written (atomically) if there is
    none. Raises ``OSError`` if it can be neither read nor written, ``ValueError`` if the file
    holds something else."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = None
    if text is not None:
        if not _VALID.fullmatch(text):
            raise ValueError(f"{path} does not hold a server id (hex digits): {text[:40]!r}")
        return text
    new_id = secrets.token_hex(6)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="ascii") as f:
            f.write(new_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        # Another server starting on the same config at the same moment may win the race:
        # link (not replace) so that only the first id is ever written, then read it back.
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links: an atomic replace still
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return load_or_create(path)


def resolve_tags(config: Config, *, config_path: str | os.PathLike | None) -> Config:
    """``config`` with every unset awsec2 ``tag_value`` set to ``scrapoxy-<server id>``.

    Touches no file when no provider needs it. Raises ``ConfigError`` naming the key when the
    id cannot be kept (no config file, or its folder is not writable).
    """
    missing = [i for i, p in enumerate(config.providers)
               if isinstance(p, AwsEc2ProviderConfig) and p.tag_value is None]
    if not missing:
        return config
    key = f"providers[{missing[0]}].tag_value"
    if config_path is None:
        raise ConfigError(key, "must be set when the server runs without a config file")
    path = server_id_path(config_path)
    try:
        server_id = load_or_create(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(key, f"is unset and the server id cannot be kept in {path} ({exc}); "
                               "set tag_value to a value unique to this server") from None
    tag = f"scrapoxy-{server_id}"
    providers = tuple(
        dataclasses.replace(p, tag_value=tag) if i in missing else p
        for i, p in enumerate(config.providers))
    return dataclasses.replace(config, providers=providers)
