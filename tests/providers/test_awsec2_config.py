"""awsec2 settings that would hurt a real user are refused or made safe at load."""
from __future__ import annotations

import subprocess
import sys

import pytest

from scrapoxy_server.config import ConfigError, from_dict
from scrapoxy_server.server_id import resolve_tags, server_id_path
from tests.cli.running import server_env

AWS = {"type": "awsec2", "allowed_cidr": "198.51.100.7/32"}
CHECK = {"check_url": "http://checkip.amazonaws.com/"}


def load(**data):
    return from_dict(data)


def test_awsec2_without_a_check_url_the_instances_can_reach_is_refused():
    with pytest.raises(ConfigError) as info:
        load(providers=[{"type": "local"}, AWS])
    assert info.value.path == "manager.check_url"
    assert "providers[1] (awsec2 'awsec2')" in str(info.value)
    assert "checkip.amazonaws.com" in str(info.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8889/ip", "http://localhost/ip",
                                 "http://[::1]:8889/ip"])
def test_awsec2_with_a_loopback_check_url_is_refused(url):
    with pytest.raises(ConfigError, match="must not be a loopback address") as info:
        load(providers=[AWS], manager={"check_url": url})
    assert info.value.path == "manager.check_url"


def test_static_proxies_on_other_hosts_need_a_check_url_too():
    remote = {"type": "static", "proxies": ["http://127.0.0.1:3128", "http://203.0.113.9:3128"]}
    with pytest.raises(ConfigError, match="static 'static'") as info:
        load(providers=[remote])
    assert info.value.path == "manager.check_url"
    assert load(providers=[remote], manager=CHECK).manager.check_url == CHECK["check_url"]
    # Proxies on this machine reach the commander's /ip: the default stays fine.
    assert load(providers=[{"type": "static", "proxies": ["http://127.0.0.1:3128"]}])


def test_awsec2_requires_allowed_cidr_and_names_it():
    with pytest.raises(ConfigError) as info:
        load(providers=[{"type": "awsec2"}], manager=CHECK)
    assert info.value.path == "providers[0].allowed_cidr"
    assert "198.51.100.7/32" in str(info.value) and "0.0.0.0/0" in str(info.value)


def test_a_bad_allowed_cidr_is_named():
    with pytest.raises(ConfigError, match="must be a CIDR") as info:
        load(providers=[{**AWS, "allowed_cidr": "my laptop"}], manager=CHECK)
    assert info.value.path == "providers[0].allowed_cidr"


def test_opening_the_proxy_port_to_everyone_must_be_written_out():
    config = load(providers=[{**AWS, "allowed_cidr": "0.0.0.0/0"}], manager=CHECK)
    assert config.providers[0].allowed_cidr == "0.0.0.0/0"


def test_start_with_an_unsafe_awsec2_config_exits_before_any_cloud_call(tmp_path):
    path = tmp_path / "scrapoxy.toml"
    path.write_text('[[providers]]\ntype = "awsec2"\nallowed_cidr = "198.51.100.7/32"\n')
    env = server_env()
    # A cloud call would need these; they point nowhere, so any call would fail loudly.
    env.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_EC2_METADATA_DISABLED="1")
    run = subprocess.run([sys.executable, "-m", "scrapoxy_server.cli", "start", str(path)],
                         capture_output=True, text=True, timeout=30, env=env)
    assert run.returncode == 2
    assert "bad configuration: manager.check_url: must be set" in run.stderr
    assert not server_id_path(path).exists()


# --- tag_value: unique per server ------------------------------------------------------


def aws_config():
    return load(providers=[{"type": "local"}, AWS], manager=CHECK)


def test_unset_tag_value_becomes_this_servers_id_kept_next_to_the_config(tmp_path):
    path = tmp_path / "scrapoxy.toml"
    first = resolve_tags(aws_config(), config_path=path)
    tag = first.providers[1].tag_value
    assert tag.startswith("scrapoxy-") and len(tag) > len("scrapoxy-") + 8
    assert server_id_path(path).read_text().strip() == tag.removeprefix("scrapoxy-")
    # A restart finds the same instances.
    assert resolve_tags(aws_config(), config_path=path).providers[1].tag_value == tag
    # Another server (a copy of the config elsewhere) gets its own.
    (tmp_path / "other").mkdir()
    other = resolve_tags(aws_config(), config_path=tmp_path / "other" / "scrapoxy.toml")
    assert other.providers[1].tag_value != tag
    assert first.providers[0] == aws_config().providers[0]  # only awsec2 is touched


def test_an_explicit_tag_value_is_kept_and_no_file_is_written(tmp_path):
    path = tmp_path / "scrapoxy.toml"
    config = load(providers=[{**AWS, "tag_value": "team-a"}], manager=CHECK)
    assert resolve_tags(config, config_path=path).providers[0].tag_value == "team-a"
    assert resolve_tags(load(), config_path=path) == load()
    assert list(tmp_path.iterdir()) == []


def test_a_server_id_that_cannot_be_kept_is_a_config_error_naming_tag_value(tmp_path):
    # A folder that does not exist stands for any folder the server may not write to.
    with pytest.raises(ConfigError, match="set tag_value") as info:
        resolve_tags(aws_config(), config_path=tmp_path / "gone" / "scrapoxy.toml")
    assert info.value.path == "providers[1].tag_value"


def test_a_corrupt_server_id_file_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "scrapoxy.toml"
    server_id_path(path).write_text("not an id\n")
    with pytest.raises(ConfigError, match="scrapoxy.toml.server-id") as info:
        resolve_tags(aws_config(), config_path=path)
    assert info.value.path == "providers[1].tag_value"


def test_without_a_config_file_tag_value_must_be_set():
    with pytest.raises(ConfigError) as info:
        resolve_tags(aws_config(), config_path=None)
    assert info.value.path == "providers[1].tag_value"
