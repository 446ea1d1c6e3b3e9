"""The state file: atomic writes, refusing a corrupt file by name, restoring over the file."""
from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap

import pytest
from twisted.internet import defer

from scrapoxy_server.config import from_dict
from scrapoxy_server.state import (StateFileError, StateKeeper, StateStore, StateWriteError,
                                   default_state_path, restore)

BEFORE = {"scaling": {"min": 1, "required": 2, "max": 2}}


def test_saved_changes_load_back_from_a_private_file(tmp_path):
    store = StateStore(tmp_path / "deep" / "state.json")
    store.save(BEFORE)
    assert StateStore(store.path).load() == BEFORE
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert json.loads(store.path.read_text())["format"] == 1
    assert os.listdir(store.path.parent) == ["state.json"]


def test_a_crash_in_the_middle_of_a_write_leaves_the_previous_state_readable(tmp_path):
    store = StateStore(tmp_path / "state.json")
    store.save(BEFORE)
    # A real process dies half-way through writing the new state: no cleanup, no rename.
    program = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from scrapoxy_server import state

        real_write = os.write

        def write_half_then_die(fd, data):
            real_write(fd, bytes(data[: len(data) // 2]))
            os._exit(9)

        state.os.write = write_half_then_die
        state.StateStore(Path({str(store.path)!r})).save(
            {{"scaling": {{"min": 7, "required": 7, "max": 7}}}})
    """)
    crashed = subprocess.run([sys.executable, "-c", program], env=os.environ, timeout=30)
    assert crashed.returncode == 9
    leftovers = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert len(leftovers) == 1  # the half-written new state, which nobody reads
    assert StateStore(store.path).load() == BEFORE
    assert os.listdir(tmp_path) == ["state.json"]  # the load cleared the leftover
    store.save({"scaling": {"min": 7, "required": 7, "max": 7}})
    assert store.load()["scaling"]["min"] == 7


def test_a_write_that_fails_names_the_file_and_keeps_the_previous_state(tmp_path):
    (tmp_path / "not-a-folder").write_text("")
    store = StateStore(tmp_path / "not-a-folder" / "state.json")
    with pytest.raises(StateWriteError) as info:
        store.save(BEFORE)
    assert str(store.path) in str(info.value) and "lost at the next restart" in str(info.value)


@pytest.mark.parametrize("content, problem", [
    ('{"format": 1, "changes": {"scaling": {"min": 1', "is not valid JSON"),
    ('{"format": 1, "changes": {"manager": {"check_interval": NaN}}}', "is not valid JSON"),
    ('{"changes": {}}', "is not a format 1 state file"),
    ("[1, 2]", "is not a format 1 state file"),
    ('{"format": 1, "changes": [1]}', "'changes' must be a table"),
    (b"\xff\xfe garbage", "cannot be read"),
])
def test_a_corrupt_state_file_is_refused_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "state.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(StateFileError) as info:
        StateStore(path).load()
    assert str(path) in str(info.value) and problem in str(info.value)
    assert "delete it" in str(info.value)


def test_restored_changes_win_for_their_keys_and_the_file_decides_the_others(tmp_path, caplog):
    file_config = from_dict({
        "scaling": {"min": 3, "required": 3, "max": 3, "downscale_delay": 42.0},
        "manager": {"check_interval": 2.0},
        "providers": [{"type": "local"},
                      {"type": "static", "name": "mine", "proxies": ["http://127.0.0.1:3128"]}]})
    changes = {"scaling": {"min": 0, "required": 1, "max": 5},
               "providers": {"mine": {"proxies": ["http://u:Secret1@127.0.0.1:4000"]},
                             "gone": {"proxies": []}}}
    with caplog.at_level(logging.INFO, logger="scrapoxy_server.state"):
        config = restore(file_config, changes, state_path=tmp_path / "state.json")
    assert (config.scaling.min, config.scaling.required, config.scaling.max) == (0, 1, 5)
    assert config.scaling.downscale_delay == 42.0
    assert config.manager.check_interval == 2.0
    assert config.providers[1].proxies == ("http://u:Secret1@127.0.0.1:4000",)
    assert "providers[mine].proxies" in caplog.text and "scaling.max" in caplog.text
    assert "'gone' is not in the config" in caplog.text
    assert "Secret1" not in caplog.text


def test_changes_the_file_now_contradicts_are_refused_naming_the_file_and_key(tmp_path):
    # autorestart.max was set to 50 through the API; the file's min was raised to 100 since.
    file_config = from_dict({"manager": {"autorestart": {"min": 100.0, "max": 200.0}}})
    with pytest.raises(StateFileError) as info:
        restore(file_config, {"manager": {"autorestart": {"max": 50.0}}},
                state_path=tmp_path / "state.json")
    assert str(tmp_path / "state.json") in str(info.value)
    assert "manager.autorestart.max" in str(info.value)


def test_a_scaling_key_never_sent_through_the_api_follows_the_file(tmp_path):
    """{"max": 5, "required": 5} was sent; the file's min moved from 3 to 2 since."""
    file_config = from_dict({"scaling": {"min": 2, "required": 2, "max": 3}})
    config = restore(file_config, {"scaling": {"max": 5, "required": 5}},
                     state_path=tmp_path / "state.json")
    assert (config.scaling.min, config.scaling.required, config.scaling.max) == (2, 5, 5)


def test_a_required_never_sent_is_clamped_into_the_restored_bounds(tmp_path):
    file_config = from_dict({"scaling": {"min": 1, "required": 4, "max": 4}})
    config = restore(file_config, {"scaling": {"max": 2}}, state_path=tmp_path / "state.json")
    assert (config.scaling.min, config.scaling.required, config.scaling.max) == (1, 2, 2)


def test_api_bounds_the_file_now_contradicts_stop_the_start_naming_the_file(tmp_path):
    file_config = from_dict({"scaling": {"min": 3, "required": 3, "max": 4}})
    with pytest.raises(StateFileError) as info:
        restore(file_config, {"scaling": {"max": 2}}, state_path=tmp_path / "state.json")
    assert str(tmp_path / "state.json") in str(info.value) and "scaling" in str(info.value)


def test_the_keeper_records_the_scaling_keys_sent_and_writes_in_order(tmp_path):
    store = StateStore(tmp_path / "state.json")
    written = []

    def run_in_thread(fn, *args):
        fn(*args)
        written.append(store.load())
        return defer.succeed(None)

    keeper = StateKeeper(store=store, changes={"manager": {"check_interval": 1.0}},
                         run_in_thread=run_in_thread)
    keeper.record_scaling({"min": 0, "required": 4, "max": 4}, sent={"required": 4, "max": 4})
    keeper.record({"manager": {"dead_after": 9.0}})
    assert written[0] == {"manager": {"check_interval": 1.0},
                          "scaling": {"required": 4, "max": 4}}
    assert written[1]["manager"] == {"check_interval": 1.0, "dead_after": 9.0}
    assert written[1]["scaling"]["max"] == 4


def test_a_recorded_required_follows_bounds_a_later_request_moved(tmp_path):
    store = StateStore(tmp_path / "state.json")
    keeper = StateKeeper(store=store, changes={},
                         run_in_thread=lambda fn, *args: defer.succeed(fn(*args)))
    keeper.record_scaling({"min": 0, "required": 3, "max": 3}, sent={"required": 3})
    # {"min": 0, "max": 0}: the manager clamped required to 0 with them.
    keeper.record_scaling({"min": 0, "required": 0, "max": 0}, sent={"min": 0, "max": 0})
    assert store.load() == {"scaling": {"min": 0, "required": 0, "max": 0}}


def test_a_recorded_required_outside_the_restored_bounds_is_clamped_with_a_warning(
        tmp_path, caplog):
    """A state file written before required followed the bounds, or a file whose max was
    lowered since: required moves with the pool anyway, so it is no reason to refuse."""
    file_config = from_dict({"scaling": {"min": 0, "required": 0, "max": 2}})
    with caplog.at_level(logging.WARNING, logger="scrapoxy_server.state"):
        config = restore(file_config, {"scaling": {"required": 3}},
                         state_path=tmp_path / "state.json")
    assert (config.scaling.min, config.scaling.required, config.scaling.max) == (0, 2, 2)
    assert "scaling.required 3" in caplog.text and "starting with 2" in caplog.text


def test_the_state_file_sits_next_to_the_config_file_unless_configured(tmp_path):
    assert default_state_path(from_dict({}), config_path=tmp_path / "scrapoxy.toml") == \
        tmp_path / "scrapoxy.state.json"
    assert default_state_path(from_dict({"state_file": str(tmp_path / "s.json")}),
                              config_path=None) == tmp_path / "s.json"
