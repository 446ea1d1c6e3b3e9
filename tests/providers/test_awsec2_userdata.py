"""User data: a stock proxy configured from plain values, checked before it reaches a VM."""
from __future__ import annotations

import pytest

from scrapoxy_server.providers.awsec2_userdata import build_user_data


def build(**overrides):
    values = dict(proxy="tinyproxy", port=3128, username="scrapoxy", password="pw-123",
                  allowed_cidr="203.0.113.7/32")
    values.update(overrides)
    return build_user_data(**values)


def test_tinyproxy_script_sets_port_auth_and_allowed_cidr():
    script = build(port=8123)
    assert script.startswith("#!/bin/bash\n")
    assert "apt-get install -y -q tinyproxy" in script
    assert "\nPort 8123\n" in script
    assert "\nAllow 203.0.113.7/32\n" in script
    assert "\nBasicAuth scrapoxy pw-123\n" in script
    # An IPv4-only Bind would stop tinyproxy from reaching IPv6 targets.
    assert "\nBind " not in script and "\nListen " not in script
    assert "set -x" not in script


def test_squid_script_uses_ncsa_auth_and_only_allows_the_cidr():
    script = build(proxy="squid", port=3129)
    assert "apt-get install -y -q squid" in script
    assert "\nhttp_port 3129\n" in script
    assert "basic_ncsa_auth /etc/squid/passwords" in script
    assert "acl master src 203.0.113.7/32" in script
    assert "http_access deny !master" in script
    assert script.index("http_access allow authenticated") < script.index("http_access deny all")
    # Anonymous: no forwarding headers added by squid.
    assert "forwarded_for delete" in script and "via off" in script
    # The clear password only reaches the hashing command, never the config file.
    assert "openssl passwd -apr1 'pw-123'" in script
    assert script.count("pw-123") == 1


def test_cidr_is_normalised():
    assert "\nAllow 10.0.0.0/8\n" in build(allowed_cidr="10.1.2.3/8")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"proxy": "nginx"}, "proxy"),
    ({"port": 0}, "port"),
    ({"port": 70000}, "port"),
    ({"allowed_cidr": "not-a-cidr"}, "not-a-cidr"),
    ({"username": "a b"}, "instance_username"),
    ({"password": "it's"}, "instance_password"),
    ({"password": "a\nSCRAPOXY_EOF"}, "instance_password"),
    ({"password": ""}, "instance_password"),
])
def test_unsafe_values_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        build(**overrides)


def test_refusing_a_password_does_not_echo_it():
    with pytest.raises(ValueError) as info:
        build(password="sec ret")
    assert "sec ret" not in str(info.value)
