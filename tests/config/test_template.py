"""``scrapoxy-server init`` writes a template whose values are the defaults and that
mentions every key a user may set."""
from __future__ import annotations

import dataclasses
import tomllib

from scrapoxy_server.cli import TEMPLATE, main
from scrapoxy_server.config import Config, load_file


def _keys(value, prefix=""):
    for f in dataclasses.fields(value):
        path = f"{prefix}{f.name}"
        inner = getattr(value, f.name)
        if dataclasses.is_dataclass(inner):
            yield from _keys(inner, path + ".")
        else:
            yield path


def test_the_written_template_loads_as_the_defaults(tmp_path, capsys):
    path = tmp_path / "scrapoxy.toml"
    assert main(["init", str(path)]) == 0
    assert load_file(path) == Config()


def test_the_template_mentions_every_top_level_and_section_key():
    for path in _keys(Config()):
        if path.startswith("providers"):
            continue
        assert path.rsplit(".", 1)[-1] in TEMPLATE, path
    assert "stats_window" in tomllib.loads(TEMPLATE)["commander"]
