"""Numbers in the config: finite, within a sane range, refused with the key path, in the file
and in a ``PATCH /api/config`` alike (both go through ``from_dict``)."""
from __future__ import annotations

import json

import pytest

from scrapoxy_server.config import ConfigError, from_dict, load_file, merge, to_dict, Config


@pytest.mark.parametrize("text, path", [
    ("[manager]\ncheck_interval = nan\n", "manager.check_interval"),
    ("[manager]\nalive_check_interval = inf\n", "manager.alive_check_interval"),
    ("[master]\nidle_timeout = -inf\n", "master.idle_timeout"),
    ("[manager]\ncheck_interval = 1e-9\n", "manager.check_interval"),
    ("[manager]\ncheck_timeout = 0.0\n", "manager.check_timeout"),
    ("[master]\nconnect_timeout = 1e300\n", "master.connect_timeout"),
    ("[scaling]\ndownscale_delay = -1\n", "scaling.downscale_delay"),
    ("[manager.autorestart]\nmin = nan\n", "manager.autorestart.min"),
    ("[manager]\ndead_after_failures = 1000000\n", "manager.dead_after_failures"),
    ("[commander]\nstats_window = 1.0\n", "commander.stats_window"),
    ("[commander]\nstats_window = 86400.0\n", "commander.stats_window"),
    ('[[providers]]\ntype = "static"\nbench = nan\n', "providers[0].bench"),
])
def test_a_config_file_with_an_absurd_number_is_refused_naming_the_key(tmp_path, text, path):
    file = tmp_path / "scrapoxy.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_file(file)
    assert info.value.path == path
    assert str(info.value).startswith(path + ": ")
    assert len(str(info.value)) < 200


def test_a_duration_out_of_range_reads_its_bounds_in_plain_numbers():
    with pytest.raises(ConfigError) as info:
        from_dict({"master": {"idle_timeout": 1e9}})
    assert info.value.message == ("must be between 0.1 and 31,536,000 seconds, "
                                  "got 1,000,000,000")


@pytest.mark.parametrize("body, path", [
    ('{"manager": {"check_interval": 1e400}}', "manager.check_interval"),
    ('{"manager": {"check_interval": -1e400}}', "manager.check_interval"),
    ('{"master": {"wait_for_instance": 1e400}}', "master.wait_for_instance"),
    ('{"manager": {"check_interval": 1' + "0" * 400 + '}}', "manager.check_interval"),
    ('{"scaling": {"max": 1' + "0" * 400 + '}}', "scaling.max"),
    ('{"master": {"port": 1' + "0" * 400 + '}}', "master.port"),
])
def test_an_api_patch_with_an_overflowing_number_is_refused_naming_the_key(body, path):
    # json.loads turns 1e400 into inf without complaint: the config must catch it.
    with pytest.raises(ConfigError) as info:
        merge(Config(), json.loads(body))
    assert info.value.path == path
    assert len(str(info.value)) < 200  # a 400-digit number is not echoed back


def test_sane_durations_load_and_the_config_stays_valid_json():
    config = from_dict({"manager": {"check_interval": 0.1, "alive_check_interval": 3600},
                        "master": {"wait_for_instance": 0}, "commander": {"stats_window": 60}})
    assert config.manager.check_interval == 0.1
    assert config.commander.stats_window == 60.0
    # allow_nan=False raises on NaN/Infinity: what GET /api/config sends must be JSON.
    json.dumps(to_dict(config), allow_nan=False)
