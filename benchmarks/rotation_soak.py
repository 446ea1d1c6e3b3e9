"""Rotation soak: continuous scraping through a pool whose instances keep being replaced.

Issue 4's "Done when": with the ``local`` provider and autorestart set to 1 to 2 minutes, a
10-minute run under continuous scraping shows instances rotating, no request failing because
of a rotation, and the alive count never at zero. This script runs exactly that, bounded in
time, and says whether it held:

    python benchmarks/rotation_soak.py                      # 10 minutes, autorestart 60-120 s
    python benchmarks/rotation_soak.py --duration 45 --autorestart-min 8 --autorestart-max 15

It starts (on free loopback ports, each in its own process group, all stopped on exit, Ctrl-C
or SIGTERM) an origin answering ``/ip`` with the caller's address (nginx, or ``origin.py``) and
``scrapoxy-server`` with the local provider; then ``--clients`` threads send GETs through the
master one after the other, while a monitor polls ``GET /api/instances`` every 0.25 s.

It prints and writes to ``--out`` (JSON): requests sent, failures by cause (the master's
``x-scrapoxy-error`` code, ``HTTP <status>``, or the client exception), failures whose
instance was retiring or gone at that moment ("caused by rotation"), rotations (instances
that reached their living limit and were replaced), the minimum routable count once the pool
was first full, and the distinct egress addresses the origin reported. Exit status 0 when
there was no failure, at least one rotation and the routable count never fell to zero.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab import HOST, Lab, LabError, free_port  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "rotation_soak.json"
MONITOR_INTERVAL = 0.25


@dataclass
class Observations:
    """What the clients and the monitor saw; every field is guarded by ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    requests: int = 0
    ok: int = 0
    failures: Counter = field(default_factory=Counter)
    failures_during_rotation: int = 0
    failure_samples: list = field(default_factory=list)
    egress: Counter = field(default_factory=Counter)
    served_by: Counter = field(default_factory=Counter)
    latencies_ms: list = field(default_factory=list)
    # Monitor: names ever listed, names seen retiring, names no longer listed.
    seen: set = field(default_factory=set)
    retiring: set = field(default_factory=set)
    gone: set = field(default_factory=set)
    rotating_now: set = field(default_factory=set)
    full_at: float | None = None
    min_routable: int | None = None
    samples: int = 0
    monitor_errors: int = 0


def routable(instances: list[dict]) -> list[str]:
    """Names the master may route to: alive, started, not retiring."""
    return [i["name"] for i in instances
            if i.get("alive") is True and i.get("status") == "started" and not i.get("retiring")]


def monitor(*, api: requests.Session, base: str, pool_size: int, seen: Observations,
            stop: threading.Event, started: float) -> None:
    while not stop.is_set():
        try:
            instances = api.get(f"{base}/api/instances", timeout=5).json()
        except (requests.RequestException, ValueError):
            with seen.lock:
                seen.monitor_errors += 1
            stop.wait(MONITOR_INTERVAL)
            continue
        names = {i["name"] for i in instances}
        up = routable(instances)
        with seen.lock:
            seen.samples += 1
            seen.gone |= seen.seen - names
            seen.seen |= names
            seen.retiring |= {i["name"] for i in instances if i.get("retiring")}
            # Retiring, stopping, or gone: a failure through one of these is rotation's fault.
            seen.rotating_now = ({i["name"] for i in instances
                                  if i.get("retiring") or i.get("status") != "started"}
                                 | seen.gone)
            if seen.full_at is None and len(up) >= pool_size:
                seen.full_at = time.monotonic() - started
            if seen.full_at is not None:
                seen.min_routable = (len(up) if seen.min_routable is None
                                     else min(seen.min_routable, len(up)))
        stop.wait(MONITOR_INTERVAL)


def client(*, master: str, url: str, pause: float, seen: Observations,
           stop: threading.Event, started: float) -> None:
    session = requests.Session()
    session.trust_env = False
    proxies = {"http": master}
    while not stop.is_set():
        began = time.monotonic()
        name = None
        try:
            response = session.get(url, proxies=proxies, timeout=30)
            name = response.headers.get("x-cache-proxyname")
            if response.status_code == 200:
                cause = None
            else:
                cause = response.headers.get("x-scrapoxy-error") or f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            cause = type(exc).__name__
            response = None
        took = (time.monotonic() - began) * 1000
        with seen.lock:
            seen.requests += 1
            if cause is None:
                seen.ok += 1
                seen.egress[response.text.strip()] += 1
                seen.served_by[name] += 1
                seen.latencies_ms.append(took)
            else:
                seen.failures[cause] += 1
                rotation = name is not None and name in seen.rotating_now
                seen.failures_during_rotation += rotation
                if len(seen.failure_samples) < 50:
                    seen.failure_samples.append({
                        "t": round(began - started, 2), "cause": cause, "instance": name,
                        "instance_rotating": rotation})
        if pause:
            stop.wait(pause)


def server_config(*, workdir: Path, master_port: int, commander_port: int, password: str,
                  instances: int, autorestart: tuple[float, float]) -> Path:
    text = f"""state_file = "{workdir / 'state.json'}"

[master]
host = "{HOST}"
port = {master_port}
wait_for_instance = 10.0
access_log = false

[commander]
host = "{HOST}"
port = {commander_port}
password = "{password}"

[scaling]
min = {instances}
required = {instances}
max = {instances}

[manager]
check_interval = 1.0
alive_check_interval = 1.0
start_timeout = 30.0
drain_grace = 30.0

[manager.autorestart]
min = {autorestart[0]}
max = {autorestart[1]}

[[providers]]
type = "local"
"""
    path = workdir / "soak.toml"
    path.write_text(text)
    return path


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def run(args: argparse.Namespace) -> dict:
    lab = Lab()
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        origin = lab.start_origin(big=False, tls=False)
        master_port, commander_port = free_port(), free_port()
        password = "soak-" + base64.b32encode(os.urandom(10)).decode().lower()
        config = server_config(workdir=lab.workdir, master_port=master_port,
                               commander_port=commander_port, password=password,
                               instances=args.instances,
                               autorestart=(args.autorestart_min, args.autorestart_max))
        server = lab.spawn("scrapoxy-server", [
            sys.executable, "-m", "scrapoxy_server.cli", "start", str(config)],
            port=master_port, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        base = f"http://{HOST}:{commander_port}"
        api = requests.Session()
        api.trust_env = False
        api.auth = ("admin", password)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not stop.is_set():
            try:
                if len(routable(api.get(f"{base}/api/instances", timeout=5).json())) \
                        >= args.instances:
                    break
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.25)
        else:
            raise LabError(f"pool not alive within 60 s:\n{server.output()}")

        seen = Observations()
        started = time.monotonic()
        url = f"http://{HOST}:{origin.port}/ip"
        master = f"http://{HOST}:{master_port}"
        threads = [threading.Thread(target=monitor, name="monitor", kwargs=dict(
            api=api, base=base, pool_size=args.instances, seen=seen, stop=stop,
            started=started))]
        threads += [threading.Thread(target=client, name=f"client-{i}", kwargs=dict(
            master=master, url=url, pause=args.pause, seen=seen, stop=stop, started=started))
            for i in range(args.clients)]
        for thread in threads:
            thread.start()
        last_report = started
        while not stop.wait(1.0):
            now = time.monotonic()
            if now - started >= args.duration:
                break
            if now - last_report >= args.progress_every:
                last_report = now
                with seen.lock:
                    print(f"  t={now - started:4.0f}s requests={seen.requests} "
                          f"failures={sum(seen.failures.values())} "
                          f"rotations={len(seen.retiring)} min_routable={seen.min_routable}",
                          flush=True)
        stop.set()
        for thread in threads:
            thread.join(40)
        elapsed = time.monotonic() - started
        if not server.running():
            raise LabError(f"scrapoxy-server exited during the run:\n{server.output()}")
        return result(args=args, seen=seen, elapsed=elapsed)
    finally:
        stop.set()
        lab.close(keep=args.keep)


def result(*, args: argparse.Namespace, seen: Observations, elapsed: float) -> dict:
    failures = sum(seen.failures.values())
    rotations = len(seen.retiring)
    passed = (failures == 0 and rotations >= 1 and seen.min_routable is not None
              and seen.min_routable >= 1)
    return {
        "benchmark": "rotation_soak",
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": {"duration_s": args.duration, "instances": args.instances,
                     "autorestart_s": [args.autorestart_min, args.autorestart_max],
                     "clients": args.clients, "pause_s": args.pause},
        "elapsed_s": round(elapsed, 1),
        "requests": seen.requests,
        "ok": seen.ok,
        "failures": dict(seen.failures),
        "failures_during_rotation": seen.failures_during_rotation,
        "failure_samples": seen.failure_samples,
        "rotations": rotations,
        "instances_seen": len(seen.seen),
        "instances_gone": len(seen.gone),
        "min_routable": seen.min_routable,
        "pool_full_after_s": None if seen.full_at is None else round(seen.full_at, 2),
        "monitor_samples": seen.samples,
        "monitor_errors": seen.monitor_errors,
        "distinct_egress": len(seen.egress),
        "egress": dict(seen.egress.most_common()),
        "served_by": dict(seen.served_by.most_common()),
        "latency_ms": {"p50": percentile(seen.latencies_ms, 0.50),
                       "p99": percentile(seen.latencies_ms, 0.99),
                       "max": percentile(seen.latencies_ms, 1.0)},
        "passed": passed,
    }


def print_summary(outcome: dict) -> None:
    print(f"\nrequests            {outcome['requests']} in {outcome['elapsed_s']} s "
          f"({outcome['ok']} ok)")
    print(f"failures            {sum(outcome['failures'].values())} "
          f"{outcome['failures'] or ''}")
    print(f"  during rotation   {outcome['failures_during_rotation']}")
    print(f"rotations           {outcome['rotations']} "
          f"({outcome['instances_seen']} instances seen, {outcome['instances_gone']} gone)")
    print(f"min routable        {outcome['min_routable']} (pool of "
          f"{outcome['settings']['instances']})")
    print(f"distinct egress IPs {outcome['distinct_egress']}")
    print(f"latency ms          p50 {outcome['latency_ms']['p50']}  "
          f"p99 {outcome['latency_ms']['p99']}  max {outcome['latency_ms']['max']}")
    print("PASS" if outcome["passed"] else "FAIL")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of scraping")
    parser.add_argument("--autorestart-min", type=float, default=60.0)
    parser.add_argument("--autorestart-max", type=float, default=120.0)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4, help="concurrent scraping threads")
    parser.add_argument("--pause", type=float, default=0.05,
                        help="seconds each client waits between requests")
    parser.add_argument("--progress-every", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep", action="store_true", help="keep the work folder and its logs")
    args = parser.parse_args(argv)
    print(f"rotation soak: {args.duration:.0f} s, {args.instances} local instances, autorestart "
          f"{args.autorestart_min:.0f}-{args.autorestart_max:.0f} s, {args.clients} clients",
          flush=True)
    try:
        outcome = run(args)
    except LabError as exc:
        print(f"rotation soak: {exc}", file=sys.stderr)
        return 2
    print_summary(outcome)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(outcome, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if outcome["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
