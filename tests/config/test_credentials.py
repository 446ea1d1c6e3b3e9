"""Credentials that HTTP Basic could never carry are refused when the config is loaded (or
patched), naming the key: a username with ':' would lock every client out (RFC 7617)."""
from __future__ import annotations

import pytest

from scrapoxy_server.config import Config, ConfigError, from_dict, load_file, merge

AWS = {"type": "awsec2", "allowed_cidr": "198.51.100.7/32"}


@pytest.mark.parametrize("data, path", [
    ({"master": {"auth": {"username": "u:x", "password": "hunter2-secret"}}},
     "master.auth.username"),
    ({"master": {"auth": {"username": "u;session=x", "password": "hunter2-secret"}}},
     "master.auth.username"),
    ({"commander": {"username": "admin:x", "password": "hunter2-secret"}}, "commander.username"),
    ({"providers": [{"type": "static", "proxies": ["http://u%3Ax:hunter2-secret@127.0.0.1:3999"]}]},
     "providers[0].proxies[0]"),
    ({"providers": [{**AWS, "instance_username": "u:x"}]}, "providers[0].instance_username"),
    ({"providers": [{**AWS, "instance_password": "hunter2:secret"}]},
     "providers[0].instance_password"),
], ids=["master-colon", "master-session-mark", "commander", "static-url", "awsec2-user",
        "awsec2-password"])
def test_a_username_http_basic_cannot_carry_is_refused_naming_the_key(data, path):
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    assert info.value.path == path
    assert "hunter2" not in str(info.value)


def test_the_config_file_with_a_colon_in_the_scraper_username_is_refused(tmp_path):
    file = tmp_path / "scrapoxy.toml"
    file.write_text('[master.auth]\nusername = "u:x"\npassword = "P"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_file(file)
    assert info.value.path == "master.auth.username"
    assert "':'" in info.value.message


def test_a_colon_in_a_password_is_fine():
    config = merge(Config(), {"master": {"auth": {"username": "u", "password": "p:a:ss"}},
                              "commander": {"password": "c:w"}})
    assert config.master.auth.password == "p:a:ss" and config.commander.password == "c:w"
