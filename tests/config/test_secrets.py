"""Secrets never leave the config: redacted views, and error messages that do not echo them."""
from __future__ import annotations

import json

import pytest

from scrapoxy_server.config import Config, ConfigError, from_dict, merge, to_dict
from scrapoxy_server.redaction import has_redacted_password, redact_text

STATIC_SECRET = "TopSecretStatic"
PROXY = f"http://bob:{STATIC_SECRET}@127.0.0.1:3999"


def test_the_redacted_config_hides_passwords_inside_proxy_urls_and_keeps_the_user():
    config = from_dict({"providers": [{"type": "static", "name": "mine",
                                       "proxies": [PROXY, "http://127.0.0.1:4000"]}]})
    shown = to_dict(config)
    assert STATIC_SECRET not in json.dumps(shown)
    assert shown["providers"][0]["proxies"] == ["http://bob:***@127.0.0.1:3999",
                                                "http://127.0.0.1:4000"]
    assert to_dict(config, redact=False)["providers"][0]["proxies"][0] == PROXY


def test_the_redacted_config_hides_secret_keys_and_urls_anywhere():
    config = from_dict({
        "master": {"auth": {"username": "scraper", "password": "hunter2-secret"}},
        "manager": {"check_url": "http://probe:UrlSecret@203.0.113.1:1/ip"},
        "providers": [{"type": "awsec2", "secret_access_key": "AwsSecret",
                       "allowed_cidr": "198.51.100.7/32",
                       "access_key_id": "AKIDSECRET", "instance_password": "InstSecret",
                       "endpoint_url": "http://k:EndpointSecret@127.0.0.1:2"}],
    })
    text = json.dumps(to_dict(config))
    for secret in ("hunter2-secret", "UrlSecret", "AwsSecret", "AKIDSECRET", "InstSecret",
                   "EndpointSecret"):
        assert secret not in text


@pytest.mark.parametrize("patch, path", [
    ({"master": {"auth": {"username": "u", "password": ["hunter2-secret"]}}},
     "master.auth.password"),
    ({"master": {"auth": "u:hunter2-secret"}}, "master.auth"),
    ({"commander": {"password": {"x": "hunter2-secret"}}}, "commander.password"),
    ({"providers": [{"type": "awsec2", "secret_access_key": 7}]}, "providers[0].secret_access_key"),
    ({"providers": [{"type": "static", "proxies": "http://bob:hunter2-secret@127.0.0.1:3999"}]},
     "providers[0].proxies"),
    ({"providers": [{"type": "static", "proxies": ["http://bob:hunter2-secret@127.0.0.1:99999"]}]},
     "providers[0].proxies[0]"),
    ({"manager": {"check_url": "https://bob:hunter2-secret@127.0.0.1/ip"}}, "manager.check_url"),
])
def test_a_refused_value_is_named_by_its_path_but_never_echoed(patch, path):
    with pytest.raises(ConfigError) as info:
        merge(Config(), patch)
    assert info.value.path == path
    assert "hunter2" not in str(info.value)
    assert "7" not in info.value.message or path != "providers[0].secret_access_key"


def test_text_redaction_masks_every_url_password_in_a_message():
    text = redact_text(f"proxies ['{PROXY}', 'http://eve:p%40ss:x@[::1]:3128/'] failed")
    assert STATIC_SECRET not in text and "p%40ss" not in text
    assert "http://bob:***@127.0.0.1:3999" in text and "http://eve:***@[::1]:3128/" in text


def test_a_url_read_back_from_the_api_is_recognised_as_redacted():
    assert has_redacted_password("http://bob:***@127.0.0.1:3999")
    assert not has_redacted_password(PROXY)
    assert not has_redacted_password("http://127.0.0.1:3999")
