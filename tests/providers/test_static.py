"""The static provider: URL parsing, stable ids, benching on terminate, runtime edits."""
from __future__ import annotations

import pytest
from twisted.internet import task

from scrapoxy_server.config import ConfigError, StaticProviderConfig, from_dict
from scrapoxy_server.models import Address, Credentials, Status
from scrapoxy_server.providers.static import StaticProvider, parse_proxy_url

from .fakes import drive


def make(*urls: str, bench: float = 60.0) -> tuple[StaticProvider, task.Clock]:
    clock = task.Clock()
    provider = StaticProvider(
        reactor=clock, config=StaticProviderConfig(name="mine", proxies=urls, bench=bench))
    return provider, clock


def listed(provider: StaticProvider, clock: task.Clock) -> list:
    return list(drive(clock, provider.list_instances()))


# --- parse_proxy_url ---------------------------------------------------------------------


def test_parse_plain_url_gives_address_and_no_credentials():
    assert parse_proxy_url("http://10.0.0.1:3128") == (Address("10.0.0.1", 3128), None)


def test_parse_percent_decodes_credentials():
    address, credentials = parse_proxy_url("http://us%40er:p%40ss%2Fw%3A@proxy.example.com:8080/")
    assert address == Address("proxy.example.com", 8080)
    assert credentials == Credentials(username="us@er", password="p@ss/w:")


def test_parse_refuses_a_colon_in_the_username_basic_could_not_send():
    # Sent upstream as Basic "us:er:pw", the proxy would read user "us" (RFC 7617).
    with pytest.raises(ValueError, match="username must not contain ':'") as info:
        parse_proxy_url("http://us%3Aer:hunter2@proxy.example.com:8080/")
    assert "hunter2" not in str(info.value)


def test_parse_username_without_password_has_empty_password():
    _, credentials = parse_proxy_url("http://user@h:1")
    assert credentials == Credentials(username="user", password="")


def test_parse_ipv6_literal_gives_bare_hostname():
    assert parse_proxy_url("http://[::1]:3128")[0] == Address("::1", 3128)


def test_parse_scheme_is_case_insensitive():
    assert parse_proxy_url("HTTP://h:1")[0] == Address("h", 1)


@pytest.mark.parametrize(("url", "bad_part"), [
    ("https://h:3128", "scheme"),
    ("socks5://h:1080", "scheme"),
    ("h:3128", "scheme"),
    ("10.0.0.1:3128", "scheme"),
    ("http://:3128", "host"),
    ("http://user:pw@:3128", "host"),
    ("http://h", "port"),
    ("http://h:0", "port"),
    ("http://h:65536", "port"),
    ("http://h:99999999", "port"),
    ("http://h:abc", "port"),
    ("http://h:-1", "port"),
    ("http://h:3128/path", "path"),
    ("http://h:3128?x=1", "query"),
    ("http://:pw@h:3128", "username"),
    ("", "empty"),
    ("http://h :3128", "whitespace"),
])
def test_parse_error_names_the_bad_part(url, bad_part):
    with pytest.raises(ValueError, match=bad_part):
        parse_proxy_url(url)


def test_parse_error_never_shows_the_password():
    with pytest.raises(ValueError) as info:
        parse_proxy_url("https://user:s3cret@h:3128")
    assert "s3cret" not in str(info.value)
    assert "user" in str(info.value)


def test_config_validation_reports_a_bad_proxy_url_with_its_key_path():
    with pytest.raises(ConfigError) as info:
        from_dict({"providers": [{"type": "static", "proxies": ["http://a:1", "http://b:0"]}]})
    assert info.value.path == "providers[0].proxies[1]"
    assert "port" in info.value.message


# --- the provider ------------------------------------------------------------------------


def test_lists_one_started_instance_per_proxy_with_address_and_credentials():
    provider, clock = make("http://a:1", "http://u:p@b:2")
    instances = listed(provider, clock)
    assert [i.id for i in instances] == ["mine-a:1", "mine-b:2"]
    assert all(i.status is Status.STARTED and i.provider == "mine" for i in instances)
    assert instances[0].address == Address("a", 1) and instances[0].credentials is None
    assert instances[1].credentials == Credentials("u", "p")


def test_ids_are_stable_across_calls_and_distinct_for_duplicates():
    provider, clock = make("http://a:1", "http://x:y@a:1", "http://[::1]:3")
    first = [i.id for i in listed(provider, clock)]
    assert first == [i.id for i in listed(provider, clock)]
    assert len(set(first)) == 3
    assert first[2] == "mine-[::1]:3"


def test_terminate_benches_the_proxy_until_bench_time_is_over():
    provider, clock = make("http://a:1", "http://b:2", bench=60)
    drive(clock, provider.terminate_instances(["mine-a:1"]))
    assert [i.id for i in listed(provider, clock)] == ["mine-b:2"]
    clock.advance(59)
    assert [i.id for i in listed(provider, clock)] == ["mine-b:2"]
    clock.advance(1)
    assert [i.id for i in listed(provider, clock)] == ["mine-a:1", "mine-b:2"]


def test_repeated_terminate_does_not_extend_the_bench():
    provider, clock = make("http://a:1", bench=60)
    provider.terminate_instances(["mine-a:1"])
    clock.advance(50)
    provider.terminate_instances(["mine-a:1"])
    clock.advance(10)
    assert [i.id for i in listed(provider, clock)] == ["mine-a:1"]


def test_terminate_ignores_unknown_ids():
    provider, clock = make("http://a:1")
    drive(clock, provider.terminate_instances(["nosuch", "mine-b:9"]))
    assert [i.id for i in listed(provider, clock)] == ["mine-a:1"]
    assert provider.benched() == {}


def test_zero_bench_means_a_terminated_proxy_stays_listed():
    provider, clock = make("http://a:1", bench=0)
    provider.terminate_instances(["mine-a:1"])
    assert [i.id for i in listed(provider, clock)] == ["mine-a:1"]


def test_create_does_nothing_and_does_not_bring_back_benched_proxies():
    provider, clock = make("http://a:1", "http://b:2")
    provider.terminate_instances(["mine-a:1"])
    assert drive(clock, provider.create_instances(5)) is None
    assert [i.id for i in listed(provider, clock)] == ["mine-b:2"]


def test_set_proxies_replaces_the_list_and_keeps_benches_of_kept_proxies():
    provider, clock = make("http://a:1", "http://b:2", bench=60)
    provider.terminate_instances(["mine-a:1", "mine-b:2"])
    provider.set_proxies(["http://a:1", "http://c:3"])
    assert [i.id for i in listed(provider, clock)] == ["mine-c:3"]
    assert set(provider.benched()) == {"mine-a:1"}
    clock.advance(60)
    assert [i.id for i in listed(provider, clock)] == ["mine-a:1", "mine-c:3"]


def test_set_proxies_with_a_bad_url_changes_nothing_and_names_its_index():
    provider, clock = make("http://a:1")
    with pytest.raises(ValueError, match=r"proxies\[1\].*port"):
        provider.set_proxies(["http://b:2", "http://c"])
    assert [i.id for i in listed(provider, clock)] == ["mine-a:1"]


def test_shutdown_succeeds():
    provider, clock = make("http://a:1")
    assert drive(clock, provider.shutdown()) is None
