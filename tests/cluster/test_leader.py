"""The leader's side of the master workers, with a fake process spawner and ``task.Clock``."""
from __future__ import annotations

from twisted.internet import error, task
from twisted.python.failure import Failure

from scrapoxy_server.cluster.channel import FrameDecoder, encode
from scrapoxy_server.cluster.leader import MasterWorkers
from scrapoxy_server.models import Address, Endpoint
from scrapoxy_server.pool import InstancePool
from scrapoxy_server.stats import Stats

START = {"kind": "start", "host": "127.0.0.1", "port": 1234}


class FakeProcess:
    def __init__(self, protocol, pid):
        self.protocol = protocol
        self.pid = pid
        self.decoder = FrameDecoder()
        self.received: list[dict] = []
        self.stdin_closed = False
        self.signals: list[str] = []

    def writeToChild(self, fd, data):
        assert fd == 0
        self.received.extend(self.decoder.feed(data))

    def closeStdin(self):
        self.stdin_closed = True

    def signalProcess(self, name):
        self.signals.append(name)

    # test helpers
    def says(self, message):
        self.protocol.childDataReceived(1, encode(message))

    def exits(self, code=0):
        reason = error.ProcessDone(0) if code == 0 else error.ProcessTerminated(code)
        self.protocol.processEnded(Failure(reason))


class Spawner:
    def __init__(self):
        self.processes: list[FakeProcess] = []

    def __call__(self, protocol, executable, argv, env, childFDs):
        assert childFDs == {0: "w", 1: "r", 2: 2}
        process = FakeProcess(protocol, pid=1000 + len(self.processes))
        self.processes.append(process)
        protocol.makeConnection(process)
        return process


def make(count=2):
    clock, pool, stats, spawner = task.Clock(), InstancePool(), Stats(), Spawner()
    workers = MasterWorkers(reactor=clock, count=count, start_message=START, pool=pool,
                            stats=stats, spawn=spawner)
    return clock, pool, stats, spawner, workers


def endpoint(name):
    return Endpoint(name=name, address=Address("127.0.0.2", 3128))


def test_each_worker_gets_the_start_message_then_the_current_pool():
    clock, pool, stats, spawner, workers = make()
    pool.publish([endpoint("p1")])
    started = workers.start()
    assert len(spawner.processes) == 2
    for process in spawner.processes:
        assert process.received[0] == START
        assert process.received[1]["kind"] == "pool"
        assert [e["name"] for e in process.received[1]["endpoints"]] == ["p1"]
    for process in spawner.processes:
        process.says({"kind": "listening", "pid": process.pid})
    assert started.called and workers.pids() == [1000, 1001]


def test_start_fails_when_a_worker_exits_before_listening():
    clock, pool, stats, spawner, workers = make(count=1)
    started = workers.start()
    failures = []
    started.addErrback(failures.append)
    spawner.processes[0].exits(code=2)
    assert failures, "start() should fail"


def test_pool_changes_reach_every_worker():
    clock, pool, stats, spawner, workers = make()
    workers.start()
    pool.publish([endpoint("p1"), endpoint("p2")])
    for process in spawner.processes:
        assert [e["name"] for e in process.received[-1]["endpoints"]] == ["p1", "p2"]


def test_worker_reports_become_stats_activity_failures_and_inflight_of_the_leader():
    clock, pool, stats, spawner, workers = make()
    workers.start()
    woken, failed = [], []
    pool.on_activity(lambda: woken.append(1))
    pool.on_failure(failed.append)
    spawner.processes[0].says({
        "kind": "report", "activity": True, "failures": ["p2"], "inflight": {"p1": 2},
        "records": [["p1", 200, None, 1000, 10, 0.01], [None, 503, "no_instance", 0, 0, 0.0]]})
    spawner.processes[1].says({"kind": "report", "activity": False, "failures": [],
                               "inflight": {"p1": 1}, "records": []})
    assert stats.total.requests == 2
    assert stats.requests_of("p1") == 1
    assert woken == [1] and failed == ["p2"]
    pool.acquire("p1")
    assert pool.inflight("p1") == 4  # 1 here + 2 + 1 in the workers
    spawner.processes[1].says({"kind": "report", "activity": False, "failures": [],
                               "inflight": {}, "records": []})
    assert pool.inflight("p1") == 3


def test_a_worker_that_dies_is_started_again_with_backoff_and_its_inflight_forgotten():
    clock, pool, stats, spawner, workers = make(count=1)
    workers.start()
    first = spawner.processes[0]
    first.says({"kind": "listening", "pid": first.pid})
    first.says({"kind": "report", "records": [], "activity": False, "failures": [],
                "inflight": {"p1": 3}})
    first.exits(code=1)
    assert pool.inflight("p1") == 0
    assert len(spawner.processes) == 1
    clock.advance(1.0)
    assert len(spawner.processes) == 2
    second = spawner.processes[1]
    second.exits(code=1)  # dies before listening: the next try waits longer
    clock.advance(1.0)
    assert len(spawner.processes) == 2
    clock.advance(1.0)
    assert len(spawner.processes) == 3


def test_stop_closes_stdin_waits_for_the_workers_and_kills_stragglers():
    clock, pool, stats, spawner, workers = make()
    workers.start()
    polite, stuck = spawner.processes
    stopped = workers.stop()
    assert polite.stdin_closed and stuck.stdin_closed
    polite.exits()
    assert not stopped.called
    clock.advance(10)
    assert stuck.signals == ["KILL"] and polite.signals == []
    stuck.exits(code=9)
    assert stopped.called
    clock.advance(60)
    assert len(spawner.processes) == 2  # nothing restarted while stopping


def test_a_garbage_speaking_worker_is_killed():
    clock, pool, stats, spawner, workers = make(count=1)
    workers.start()
    spawner.processes[0].protocol.childDataReceived(1, b"\xff\xff\xff\xff")
    assert spawner.processes[0].signals == ["KILL"]


def test_new_settings_reach_every_worker_and_the_ones_started_later():
    clock, pool, stats, spawner, workers = make(count=2)
    workers.start()
    for process in spawner.processes:
        process.says({"kind": "listening", "pid": process.pid})
    settings = {"connect_timeout": 1.0}
    workers.reconfigure(settings=settings, auth={"username": "u", "password": "p"})
    for process in spawner.processes:
        assert process.received[-1] == {"kind": "settings", "settings": settings,
                                         "auth": {"username": "u", "password": "p"}}
    spawner.processes[0].exits(1)
    clock.advance(60)
    restarted = spawner.processes[-1]
    assert restarted.received[0]["kind"] == "start"
    assert restarted.received[0]["settings"] == settings
    assert restarted.received[0]["auth"] == {"username": "u", "password": "p"}
