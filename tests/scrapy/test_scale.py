"""Scale and wait: the pool gate (with a fake clock), no_instance retries, wake and sleep."""
from __future__ import annotations

import pytest
from scrapy import Request
from scrapy.core.downloader.handlers.http11 import TunnelError
from scrapy.http import Response
from twisted.internet import defer, task

from scrapoxy_scrapy import DOWNLOADER_MIDDLEWARES, ScaleMiddleware
from scrapoxy_scrapy.commander import CommanderHTTPError, CommanderUnavailable
from scrapoxy_scrapy.pool import PoolGate, backoff_delay
from scrapoxy_scrapy.scale import get_no_instance_retry_request
from tests.scrapy.chain import Chain


class AliveCounts:
    """``alive_count`` answering from a list (the last value repeats); counts calls."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self) -> defer.Deferred[int]:
        self.calls += 1
        value = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return defer.fail(value) if isinstance(value, Exception) else defer.succeed(value)


def gate(alive_count=None, clock=None, wait_timeout_s: float = 100.0) -> PoolGate:
    return PoolGate(clock=clock or task.Clock(), alive_count=alive_count, backoff_base_s=1.0,
                    backoff_max_s=8.0, wait_timeout_s=wait_timeout_s)


@pytest.mark.parametrize(("attempt", "delay"), [(0, 1.0), (1, 2.0), (3, 8.0), (10, 8.0)])
def test_backoff_doubles_up_to_the_cap(attempt, delay):
    assert backoff_delay(attempt, base_s=1.0, max_s=8.0) == delay


def test_open_gate_lets_requests_through_at_once():
    assert gate().wait().called


def test_closed_gate_holds_requests_until_an_instance_is_alive():
    clock, counts = task.Clock(), AliveCounts(0, 0, 2)
    pool = gate(counts, clock)
    pool.close("spider_opened")
    waiting = pool.wait()
    assert not waiting.called and counts.calls == 1
    clock.advance(1.0)   # backoff 1 s, second poll: still 0
    assert not waiting.called and counts.calls == 2
    clock.advance(2.0)   # backoff 2 s, third poll: 2 alive
    assert waiting.called and pool.ready and counts.calls == 3


def test_commander_errors_while_waiting_keep_waiting():
    clock = task.Clock()
    pool = gate(AliveCounts(CommanderUnavailable("down"), 1), clock)
    pool.close("no_instance")
    waiting = pool.wait()
    assert not waiting.called
    clock.advance(1.0)
    assert waiting.called


@pytest.mark.parametrize("error, level, words", [
    (CommanderHTTPError(status=401, code="auth", message="wrong credentials"), "ERROR",
     "check SCRAPOXY_API, SCRAPOXY_USERNAME and SCRAPOXY_PASSWORD"),
    (CommanderHTTPError(status=404, message="<html>" + "x" * 5000), "ERROR", "SCRAPOXY_API"),
    (CommanderUnavailable("connection refused"), "WARNING", "cannot ask the commander"),
], ids=["wrong-password", "wrong-url", "down"])
def test_a_commander_that_gives_no_count_releases_requests_after_one_backoff(
        caplog, error, level, words):
    """Not SCRAPOXY_WAIT_TIMEOUT (300 s) of a stalled crawl for a typo in a setting: the
    master holds each request while the pool wakes."""
    clock, counts = task.Clock(), AliveCounts(error)
    pool = gate(counts, clock)
    pool.close("spider_opened")
    waiting = pool.wait()
    clock.advance(1.0)
    assert waiting.called and pool.ready and counts.calls == 1
    (record,) = [r for r in caplog.records if r.name == "scrapoxy_scrapy.pool"
                 and r.levelname in ("ERROR", "WARNING")]
    assert record.levelname == level and words in record.getMessage()
    assert len(record.getMessage()) < 600  # an HTML page is not logged whole


def test_gate_gives_up_waiting_after_wait_timeout():
    clock = task.Clock()
    pool = gate(AliveCounts(0), clock, wait_timeout_s=5.0)
    pool.close("spider_opened")
    waiting = pool.wait()
    clock.pump([1.0] * 10)
    assert waiting.called and pool.ready


def test_without_commander_gate_reopens_after_growing_backoff():
    clock = task.Clock()
    pool = gate(None, clock)
    pool.close("no_instance")
    clock.advance(1.0)
    assert pool.ready
    pool.close("no_instance")  # no response served in between: longer wait
    clock.advance(1.0)
    assert not pool.ready
    clock.advance(1.0)
    assert pool.ready
    pool.served()
    assert pool.closes == 0


def test_stop_releases_waiters():
    pool = gate(AliveCounts(0))
    pool.close("spider_opened")
    waiting = pool.wait()
    pool.stop()
    assert waiting.called


def test_no_instance_retry_is_bounded_per_request():
    request = Request("https://e.com/", meta={"scrapoxy_no_instance_retry_times": 1})
    retry = get_no_instance_retry_request(request, max_times=5)
    assert retry is not None and retry.dont_filter
    assert get_no_instance_retry_request(retry, max_times=5) is None


def no_instance(request: Request) -> Response:
    return Response(request.url, status=503, request=request,
                    headers={"x-scrapoxy-error": "no_instance", "Retry-After": "1"})


def test_no_instance_answer_is_retried_without_using_retry_times():
    chain = Chain({"DOWNLOADER_MIDDLEWARES": DOWNLOADER_MIDDLEWARES, "RETRY_TIMES": 0})
    result = chain.fetch(Request("https://example.com/a"), no_instance)
    assert isinstance(result, Request)
    assert result.url == "https://example.com/a"
    assert result.meta["scrapoxy_no_instance_times"] == 1
    assert "retry_times" not in result.meta


def test_connect_mode_no_instance_refusal_is_retried_without_using_retry_times():
    refused = TunnelError("Could not open CONNECT tunnel with proxy 127.0.0.1:8888 "
                          "[{'status': 503, 'reason': b'Service Unavailable'}]")
    chain = Chain({"DOWNLOADER_MIDDLEWARES": DOWNLOADER_MIDDLEWARES, "RETRY_TIMES": 0,
                   "SCRAPOXY_HTTPS_MODE": "connect"})
    result = chain.fetch(Request("https://example.com/a"), refused)
    assert isinstance(result, Request)
    assert result.meta["scrapoxy_no_instance_times"] == 1
    assert "retry_times" not in result.meta


def test_other_master_errors_are_left_to_retry_middleware():
    def upstream(request: Request) -> Response:
        return Response(request.url, status=502, request=request,
                        headers={"x-scrapoxy-error": "upstream"})
    chain = Chain({"DOWNLOADER_MIDDLEWARES": DOWNLOADER_MIDDLEWARES})
    result = chain.fetch(Request("https://example.com/a"), upstream)
    assert isinstance(result, Request) and result.meta["retry_times"] == 1


class FakeCommander:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def wake(self):
        self.calls.append("wake")
        return defer.succeed(None)

    def sleep(self):
        self.calls.append("sleep")
        return defer.fail(CommanderUnavailable("down"))  # logged, never raised into Scrapy

    def close(self):
        self.calls.append("close")
        return defer.succeed(None)


def test_spider_open_wakes_pool_and_holds_requests_spider_close_puts_it_to_sleep():
    commander = FakeCommander()
    pool = gate(AliveCounts(0))
    middleware = ScaleMiddleware(gate=pool, commander=commander)
    assert defer.ensureDeferred(middleware.spider_opened()).called
    assert commander.calls == ["wake"] and not pool.ready
    d = defer.ensureDeferred(middleware.spider_closed())
    assert d.called and pool.ready
    assert commander.calls == ["wake", "sleep", "close"]


def test_without_commander_open_and_close_do_nothing():
    pool = gate(AliveCounts(0))
    middleware = ScaleMiddleware(gate=pool, commander=None)
    assert defer.ensureDeferred(middleware.spider_opened()).called and pool.ready
