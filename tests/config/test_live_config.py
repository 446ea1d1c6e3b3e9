"""``live_config``: what a ``PATCH /api/config`` may change on a running server."""
from __future__ import annotations

import pytest

from scrapoxy_server.config import ConfigError, from_dict
from scrapoxy_server.live_config import changed_paths, patched, state_diff

CURRENT = from_dict({
    "master": {"auth": {"username": "scraper", "password": "OldSecret"}},
    "commander": {"password": "pw"},
    "manager": {"check_url": "http://203.0.113.1/ip"},
    "providers": [
        {"type": "local"},
        {"type": "static", "name": "mine",
         "proxies": ["http://bob:Secret1@127.0.0.1:3999", "http://eve:Secret2@127.0.0.1:4000"]},
        {"type": "awsec2", "name": "aws", "secret_access_key": "AwsSecret",
         "allowed_cidr": "198.51.100.7/32"},
    ],
})


@pytest.mark.parametrize("patch, path", [
    ({"master": {"port": 9999}}, "master.port"),
    ({"master": {"host": "0.0.0.0", "allow_public": True}}, "master.allow_public"),
    ({"master": {"tls_verify": False}}, "master.tls_verify"),
    ({"commander": {"port": 1}}, "commander.port"),
    ({"commander": {"password": "new"}}, "commander.password"),
    ({"state_file": "/tmp/elsewhere.json"}, "state_file"),
    ({"providers": {"mine": {"type": "local"}}}, "providers.mine.type"),
    ({"providers": {"mine": {"bench": 5.0}}}, "providers[1].bench"),
    ({"providers": {"aws": {"region": "eu-west-3"}}}, "providers[2].region"),
    ({"providers": [{}, {"name": "renamed"}, {}]}, "providers[1].name"),
    ({"providers": [{}]}, "providers"),
    ({"providers": {"nosuch": {}}}, "providers.nosuch"),
])
def test_a_key_that_needs_a_restart_is_refused_by_name(patch, path):
    with pytest.raises(ConfigError) as info:
        patched(CURRENT, patch)
    assert info.value.path == path


def test_live_keys_change_and_the_rest_stays():
    new = patched(CURRENT, {
        "master": {"idle_timeout": 5.0, "deny": ["*.example.com"],
                   "auth": {"password": "NewSecret"}},
        "manager": {"check_interval": 0.5, "autorestart": {"max": 60.0}},
        "commander": {"stats_window": 120.0},
        "scaling": {"max": 7, "downscale_delay": 10.0},
        "providers": {"mine": {"proxies": ["http://127.0.0.1:5000"]}},
    })
    assert new.master.idle_timeout == 5.0 and new.master.deny == ("*.example.com",)
    assert new.master.auth.password == "NewSecret" and new.master.auth.username == "scraper"
    assert new.manager.check_interval == 0.5 and new.manager.autorestart.max == 60.0
    assert new.commander.stats_window == 120.0
    assert new.scaling.max == 7
    assert new.providers[1].proxies == ("http://127.0.0.1:5000",)
    assert new.providers[2] == CURRENT.providers[2]


def test_the_provider_list_as_get_shows_it_is_matched_by_position():
    new = patched(CURRENT, {"providers": [{}, {"proxies": ["http://127.0.0.1:5000"]}, {}]})
    assert new.providers[1].proxies == ("http://127.0.0.1:5000",)


def test_a_proxy_url_sent_back_redacted_keeps_its_password():
    new = patched(CURRENT, {"providers": {"mine": {"proxies": [
        "http://eve:***@127.0.0.1:4000", "http://bob:***@127.0.0.1:3999",
        "http://new:Secret3@127.0.0.1:4001"]}}})
    assert new.providers[1].proxies == ("http://eve:Secret2@127.0.0.1:4000",
                                        "http://bob:Secret1@127.0.0.1:3999",
                                        "http://new:Secret3@127.0.0.1:4001")


def test_a_redacted_url_that_matches_no_current_proxy_is_refused_without_echo():
    with pytest.raises(ConfigError) as info:
        patched(CURRENT, {"providers": {"mine": {"proxies": ["http://bob:***@127.0.0.1:9"]}}})
    assert info.value.path == "providers[1].proxies[0]"
    assert "send the real password" in info.value.message


def test_a_patch_that_changes_nothing_gives_the_same_config():
    assert patched(CURRENT, {"master": {"port": 8888}, "scaling": {"min": 3}}) == CURRENT


def test_the_state_diff_holds_only_what_changed_with_providers_by_name():
    new = patched(CURRENT, {"manager": {"check_interval": 1.0}, "scaling": {"max": 5},
                            "providers": {"mine": {"proxies": []}}})
    assert state_diff(CURRENT, new) == {"manager": {"check_interval": 1.0}, "scaling": {"max": 5},
                                        "providers": {"mine": {"proxies": []}}}
    assert "scaling.max" in changed_paths({"scaling": {"max": 3}}, {"scaling": {"max": 5}})


def test_the_config_read_from_the_api_sent_back_whole_changes_nothing():
    from scrapoxy_server.commander.api_views import without_redacted_secrets
    from scrapoxy_server.config import to_dict

    assert patched(CURRENT, without_redacted_secrets(to_dict(CURRENT))) == CURRENT


def test_scaling_bounds_patched_through_the_config_take_required_with_them_as_the_scaling_api():
    awake = patched(CURRENT, {"scaling": {"min": 1, "required": 3, "max": 3}})
    stopped = patched(awake, {"scaling": {"min": 0, "max": 0}})
    assert (stopped.scaling.min, stopped.scaling.required, stopped.scaling.max) == (0, 0, 0)
    assert state_diff(awake, stopped) == {"scaling": {"min": 0, "required": 0, "max": 0}}
    with pytest.raises(ConfigError) as info:
        patched(awake, {"scaling": {"min": 4}})  # min above max: still refused
    assert info.value.path == "scaling.min"
