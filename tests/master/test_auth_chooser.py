"""Scraper auth parsing and the per-request instance choice."""
import base64

from scrapoxy_server.master.auth import ScraperAuth, parse_basic
from scrapoxy_server.master.chooser import InstanceChooser
from scrapoxy_server.models import Address, Endpoint
from scrapoxy_server.pool import InstancePool


def basic(pair: str) -> bytes:
    return b"Basic " + base64.b64encode(pair.encode())


def test_credentials_with_any_characters_are_accepted():
    auth = ScraperAuth(username="a@b", password="p:w/%é")
    assert auth.check(parse_basic(basic("a@b:p:w/%é")))
    assert not auth.check(parse_basic(basic("a@b:wrong")))
    assert not auth.check(parse_basic(b"Basic !!!"))
    assert not auth.check(parse_basic(None))
    latin1 = b"Basic " + base64.b64encode("a@b:p:w/%é".encode("latin-1"))
    assert auth.check(parse_basic(latin1))


def test_session_token_rides_in_the_username():
    creds = parse_basic(basic("u;session=abc:p"))
    assert (creds.username, creds.session, creds.password) == (b"u", "abc", b"p")


def endpoints(*names):
    return [Endpoint(n, Address("127.0.0.1", 1000 + i)) for i, n in enumerate(names)]


def test_unpinned_requests_rotate_over_every_instance():
    pool = InstancePool()
    pool.publish(endpoints("p1", "p2", "p3"))
    chooser = InstanceChooser(pool)
    picks = [chooser.choose(domain="a.com").name for _ in range(6)]
    assert picks == ["p1", "p2", "p3", "p1", "p2", "p3"]


def test_pinned_name_wins_and_falls_back_when_gone():
    pool = InstancePool()
    pool.publish(endpoints("p1", "p2"))
    chooser = InstanceChooser(pool)
    assert {chooser.choose(domain="a", pinned="p2").name for _ in range(5)} == {"p2"}
    assert chooser.choose(domain="a", pinned="gone").name in {"p1", "p2"}


def test_no_instance_gives_none():
    assert InstanceChooser(InstancePool()).choose(domain="a") is None
