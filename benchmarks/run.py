"""Benchmark the master against squid alone and haproxy in front of squid, on loopback.

    python benchmarks/run.py             # full run, about 10 minutes
    python benchmarks/run.py --quick     # about 2 minutes, fewer points
    python benchmarks/run.py --memory    # only the memory checks

Starts an origin (nginx, or ``origin.py``), squid (the instance), haproxy (the peer) and
scrapoxy-server (the master, ``static`` provider -> the same squid) on free loopback ports,
drives every path with wrk, samples CPU from /proc around each point, and prints the points, the
ratios to the peer measured in the same run, and a Markdown table for the README. Results go to
``--out`` as JSON. Every process started is stopped on exit, Ctrl-C included.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hotpath  # noqa: E402
import report  # noqa: E402
from lab import HAPROXY, HOST, NGINX, SQUID, Lab, LabError, cpu_seconds, rss_bytes  # noqa: E402
from load import WRK, lua_script, run_connect, run_wrk  # noqa: E402
from memory import MIB, hold_idle_connections, stream_big_bodies  # noqa: E402

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raised = raise_fd_limit()
    os.environ.pop("http_proxy", None)
    os.environ.pop("HTTP_PROXY", None)
    results: dict = {
        "command": "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "started_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {"duration": args.duration, "repeat": args.repeat,
                   "concurrency": args.concurrency,
                   "bodies": args.bodies, "fd_limit": raised},
        "points": [],
        "notes": [],
    }
    lab = Lab()
    # SIGTERM (and SIGHUP) become an exception, so ``finally`` stops the lab.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    started = time.monotonic()
    try:
        run(args, lab, results)
    except KeyboardInterrupt:
        results["notes"].append("interrupted")
        print("\ninterrupted; stopping the lab", file=sys.stderr)
    except LabError as exc:
        results["notes"].append(f"lab error: {exc}")
        print(f"lab error: {exc}", file=sys.stderr)
    finally:
        lab.close(keep=args.keep)
        if args.keep:
            print(f"work folder kept: {lab.workdir}")
    results["seconds"] = round(time.monotonic() - started, 1)
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["ratios"] = report.ratios(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + report.markdown(results))
    if results["notes"]:
        print("\nNotes:\n" + "\n".join(f"- {n}" for n in results["notes"]))
    print(f"\nwrote {out} ({results['seconds']:.0f} s)")
    return 0 if not any("error" in n for n in results["notes"]) else 1


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter points (~2 min)")
    parser.add_argument("--duration", type=float, help="seconds per point (default 5, quick 3)")
    parser.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    parser.add_argument("--memory", action="store_true", help="only the memory checks")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["matrix", "profile", "https", "connect", "memory", "pool",
                                 "planner"],
                        help="leave out a section (repeatable)")
    parser.add_argument("--pool-size", type=int, default=1000,
                        help="instances in the large pool of the pool-size check")
    parser.add_argument("--repeat", type=int,
                        help="rounds per matrix point, median kept (default 3, quick 1)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (configs, logs)")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 5.0
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.quick:
        args.concurrency, args.bodies = [1, 64], ["1k", "1m"]
    else:
        args.concurrency, args.bodies = [1, 16, 64], ["1k", "1m"]
    if args.memory:
        args.skip = ["matrix", "https", "connect", "pool", "planner"]
    return args


def raise_fd_limit() -> int:
    """10,000 held connections need > 10,000 descriptors here and in the master (a child)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine_info() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name, command in (("nginx", [NGINX, "-v"]), ("squid", [SQUID, "-v"]),
                          ("haproxy", [HAPROXY, "-v"]), ("wrk", [WRK, "-v"])):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
            first = (done.stdout + done.stderr).strip().splitlines()[0]
            # "nginx version: nginx/1.22.1", "Squid Cache: Version 5.7",
            # "HAProxy version 2.6.12-1+deb12u4 2025/...", "wrk debian/4.1.0-3+b2 [epoll] ..."
            words = [w.split("/")[-1] for w in first.split()]
            versions[name] = next((w for w in words if w[:1].isdigit()), first[:30])
        except (OSError, IndexError, subprocess.TimeoutExpired):
            versions[name] = "missing"
    try:
        import twisted
        versions["twisted"] = twisted.__version__
    except ImportError:
        pass
    return {
        "nproc": os.cpu_count(),
        # Other work on the machine skews absolute figures; ratios from one run less so.
        "loadavg_at_start": os.getloadavg(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
    }


# --- the sections --------------------------------------------------------------------------


def run(args: argparse.Namespace, lab: Lab, results: dict) -> None:
    skip = set(args.skip)
    need_big = "memory" not in skip
    origin = lab.start_origin(big=need_big, tls="https" not in skip)
    squid = lab.start_squid()
    haproxy = lab.start_haproxy(squid_port=squid.port)
    check_url = f"http://{HOST}:{origin.port}/ip"
    master = lab.start_master(name="master", proxies=[f"http://{HOST}:{squid.port}"],
                              check_url=check_url, ca_file=origin.extra.get("cert"))
    pids = {"origin": origin.pid, "squid": squid.pid, "haproxy": haproxy.pid, "master": master.pid}
    results["lab"] = {"origin": origin.extra.get("kind")}
    print(f"lab up in {lab.workdir}: origin {origin.extra['kind']} :{origin.port}, "
          f"squid :{squid.port}, haproxy :{haproxy.port}, master :{master.port}", flush=True)

    def record(point) -> None:
        data = asdict(point)
        results["points"].append(data)
        cpu = ", ".join(f"{k} {v:g}" for k, v in point.cpu_us_per_request.items())
        flag = f"  ERROR {point.error}" if point.error else (
            f"  FAILED {point.failed}" if point.failed else "")
        print(f"  {point.path:34} {point.body:3} c={point.concurrency:<3} {point.rps:>10,.0f} req/s"
              f"  p50 {point.p50_ms or 0:7.3f} ms  p99 {point.p99_ms or 0:8.3f} ms"
              f"  cpu us/req: {cpu}{flag}", flush=True)
        if point.error or point.failed:
            results["notes"].append(f"{point.path} {point.body} c={point.concurrency}: "
                                    f"{point.error or f'{point.failed} failed requests'}")
        # Every service still owned by the lab must have survived the point.
        for service in lab.services:
            if not service.running():
                raise LabError(f"{service.name} died during {point.path}:\n{service.output()}")

    proxied = {
        report.SQUID: squid.port,
        report.HAPROXY: haproxy.port,
        report.MASTER: master.port,
    }

    def drive(label: str, body: str, concurrency: int, duration: float):
        url = f"http://{HOST}:{origin.port}/{body}"
        if label == report.ORIGIN:
            script, connect = None, url
        else:
            script = lua_script(lab.workdir, url=url, headers={"Host": f"{HOST}:{origin.port}"})
            connect = f"http://{HOST}:{proxied[label]}/"
        return run_wrk(label=label, body=body, concurrency=concurrency, duration=duration,
                       connect_url=connect, script=script, pids=pids)

    if "matrix" not in skip:
        print("warming up", flush=True)
        for label in (report.ORIGIN, *proxied):
            drive(label, "1k", 16, 1.0)
        print(f"matrix ({args.repeat} round(s) per point, median kept)", flush=True)
        # Paths interleaved per (body, c), and rounds interleaved too: drift on a shared
        # machine then hits every path alike, and the median run of each point is kept.
        for body in args.bodies:
            for concurrency in args.concurrency:
                if args.quick and body == "1m" and concurrency == 1:
                    continue
                runs: dict[str, list] = {}
                for round_ in range(args.repeat):
                    for label in (report.ORIGIN, *proxied):
                        point = drive(label, body, concurrency, args.duration)
                        print(f"    round {round_ + 1}: {label:20} {point.rps:>10,.0f} req/s",
                              flush=True)
                        runs.setdefault(label, []).append(point)
                for label, points in runs.items():
                    record(median_point(points))

    if "profile" not in skip:
        results["profile"] = profile_master(args, lab, master=master, drive=drive)

    if "https" not in skip and origin.extra.get("tls_port"):
        print("https by Location", flush=True)
        tls_port = origin.extra["tls_port"]
        for concurrency in ([16] if args.quick else [1, 64]):
            record(run_wrk(label=report.HTTPS_DIRECT, body="1k", concurrency=concurrency,
                           duration=args.duration, connect_url=f"https://{HOST}:{tls_port}/1k",
                           script=None, pids=pids))
            script = lua_script(lab.workdir, url=f"http://{HOST}:{tls_port}/1k", headers={
                "Host": f"{HOST}:{tls_port}", "Location": f"https://{HOST}:{tls_port}/1k"})
            record(run_wrk(label=report.HTTPS_MASTER, body="1k", concurrency=concurrency,
                           duration=args.duration, connect_url=f"http://{HOST}:{master.port}/",
                           script=script, pids=pids))
    elif "https" not in skip:
        results["notes"].append("HTTPS-by-Location row skipped: the fallback origin has no TLS")

    if "connect" not in skip:
        print("CONNECT tunnels (python client, keep-alive HTTP inside each tunnel)", flush=True)
        for label, port in proxied.items():
            record(run_connect(label=f"CONNECT: {label}", proxy_port=port,
                               target=f"{HOST}:{origin.port}", path="/1k", body="1k",
                               body_size=1024, concurrency=16, duration=args.duration, pids=pids))

    if "memory" not in skip:
        print("memory: 50 clients x 100 MiB through the master", flush=True)
        time.sleep(1.0)
        stream = stream_big_bodies(master_port=master.port, origin_port=origin.port,
                                   pid=master.pid, clients=50, size=100 * MIB,
                                   stall=3.0, timeout=150.0)
        stream.pop("samples", None)
        results.setdefault("memory", {})["stream"] = stream
        print(f"  {stream}", flush=True)
        print("memory: 10,000 idle client connections", flush=True)
        idle = hold_idle_connections(master_port=master.port, origin_port=origin.port,
                                     pid=master.pid, count=10_000, hold=3.0, sample=100,
                                     timeout=90.0)
        results["memory"]["idle"] = idle
        print(f"  {idle}", flush=True)
        if not master.running():
            raise LabError(f"master died during the memory checks:\n{master.output()}")

    if "pool" not in skip:
        # Alone on the machine: an idle master still runs health checks, which would be
        # charged to the one under load.
        lab.stop(master)
        results["pool"] = pool_size(args, lab, origin=origin, squid=squid,
                                    check_url=check_url, record=record)

    if "planner" not in skip:
        results["planner"] = planner_timing(10_000)
        print(f"planner: {results['planner']}", flush=True)


def profile_master(args, lab: Lab, *, master, drive) -> dict:
    """The master's per-request path under the top concurrency, 1 KiB, sampled by py-spy."""
    if not hotpath.available():
        print("profile: py-spy not found (pip install py-spy); skipped", flush=True)
        return {"skipped": "py-spy not installed"}
    concurrency = max(args.concurrency)
    print(f"profile: py-spy on the master at c={concurrency}, 1 KiB", flush=True)
    raw = lab.workdir / "master-profile.txt"
    sampler = hotpath.record(master.pid, seconds=args.duration, out=raw)
    point = drive(report.MASTER, "1k", concurrency, args.duration)
    sampler.wait(timeout=args.duration + 30)
    summary = hotpath.summarise(raw) if raw.exists() else {"samples": 0}
    summary["rps_while_sampled"] = round(point.rps)
    for percent, frame in summary.get("self", [])[:8]:
        print(f"  {percent:5.1f}%  {frame}", flush=True)
    return summary


def median_point(points: list):
    """The run with the median req/s; the others' req/s are kept in its note."""
    ranked = sorted(points, key=lambda p: (not p.error, p.rps))
    chosen = ranked[len(ranked) // 2]
    if len(points) > 1:
        chosen.note += "; rounds req/s " + " / ".join(f"{p.rps:.0f}" for p in points)
    return chosen


QUIET_INTERVAL = 60.0


def pool_size(args, lab: Lab, *, origin, squid, check_url: str, record) -> dict:
    """Throughput at the top concurrency, 1 KiB, with 3 and ``--pool-size`` static instances.

    Every instance is the same squid (the static provider gives duplicates ids with ``#N``).
    Two comparisons:

    - checks quiet (interval 60 s, a check per instance a minute; the round at start makes
      them alive, and one whose first check failed in the start-up rush gets another): both
      masters run side by side and are measured in alternating rounds, so drift hits both
      alike. This isolates the request path (instance choice, upstream connection pools).
    - checks every 2 s (the default: what production pays, one check per instance per
      interval): one master at a time, since the idle one's checks would load the other.
    """
    concurrency = max(args.concurrency)
    url = f"http://{HOST}:{origin.port}/1k"
    script = lua_script(lab.workdir, url=url, headers={"Host": f"{HOST}:{origin.port}"})
    sizes = (3, args.pool_size)

    def start(count: int, interval: float):
        began = time.monotonic()
        master = lab.start_master(
            name=f"master-pool{count}-{interval:g}", proxies=[f"http://{HOST}:{squid.port}"] * count,
            check_url=check_url, ca_file=None, alive_check_interval=interval, timeout=90.0)
        return master, time.monotonic() - began

    def measure(master, label: str, ready: float):
        pids = {"origin": origin.pid, "squid": squid.pid, "master": master.pid}
        point = run_wrk(label=label, body="1k", concurrency=concurrency,
                        duration=args.duration, connect_url=f"http://{HOST}:{master.port}/",
                        script=script, pids=pids)
        point.note += (f"; all alive {ready:.1f}s after start; "
                       f"RSS {rss_bytes(master.pid) / MIB:.0f} MiB")
        return point

    result: dict = {"small": sizes[0], "large": sizes[1]}
    try:
        print(f"pool size, checks quiet: {sizes[0]} vs {sizes[1]} instances side by side, "
              f"{args.repeat} round(s)", flush=True)
        masters = [start(count, QUIET_INTERVAL) for count in sizes]
        time.sleep(1.0)
        runs: dict[int, list] = {count: [] for count in sizes}
        for _ in range(args.repeat):
            for count, (master, ready) in zip(sizes, masters):
                runs[count].append(measure(master, f"master -> squid, pool {count}, checks quiet",
                                           ready))
        quiet = {}
        for count in sizes:
            point = median_point(runs[count])
            record(point)
            quiet[count] = point.rps
        for master, _ in masters:
            lab.stop(master)
        result.update(small_quiet_rps=quiet[sizes[0]], large_quiet_rps=quiet[sizes[1]],
                      ratio_quiet=round(quiet[sizes[1]] / quiet[sizes[0]], 3)
                      if quiet[sizes[0]] else None)
        checked = {}
        for count in sizes:
            print(f"pool size, checks every 2 s: {count} instances alone", flush=True)
            master, ready = start(count, 2.0)
            time.sleep(1.0)
            # What the health checks alone cost: the master's CPU with no traffic, over 4 s
            # (two check rounds).
            cpu0 = cpu_seconds(master.pid)
            time.sleep(4.0)
            idle_cpu = round((cpu_seconds(master.pid) - cpu0) / 4.0 * 100, 1)
            result[f"idle_cpu_percent_{count}"] = idle_cpu
            print(f"  idle master, {count} instances, checks every 2 s: {idle_cpu}% of a core",
                  flush=True)
            point = measure(master, f"master -> squid, pool {count}, checks 2 s", ready)
            point.note += f"; idle CPU {idle_cpu}% of a core"
            record(point)
            checked[count] = point.rps
            lab.stop(master)
        result.update(small_rps=checked[sizes[0]], large_rps=checked[sizes[1]],
                      ratio=round(checked[sizes[1]] / checked[sizes[0]], 3)
                      if checked[sizes[0]] else None)
    except LabError as exc:
        result["error"] = str(exc)[:500]
    return result


def planner_timing(count: int) -> dict:
    try:
        from scrapoxy_server.models import Status
        from scrapoxy_server.planner import InstanceState, Limits, plan
    except ImportError as exc:
        return {"instances": count, "note": f"skipped: planner not importable ({exc})"}
    now = 10_000.0
    instances = []
    for i in range(count):
        # A realistic mix: mostly alive, some dead, some expired, some retiring.
        instances.append(InstanceState(
            name=f"i{i}", provider="bench", status=Status.STARTED, has_address=True,
            alive=i % 10 != 0, first_seen_at=now - 5000 + i % 100,
            last_alive_at=now - (100 if i % 50 == 0 else 1), failures=3 if i % 50 == 0 else 0,
            expires_at=now - 1 if i % 20 == 0 else now + 3600,
            retiring=i % 100 == 7, retiring_since=now - 10 if i % 100 == 7 else None,
            inflight=i % 3))
    limits = Limits(start_timeout=60.0, dead_after=30.0, dead_after_failures=3, drain_grace=30.0)
    timings = []
    result = None
    for _ in range(7):
        t0 = time.perf_counter()
        result = plan(instances=instances, required=count, now=now, limits=limits)
        timings.append((time.perf_counter() - t0) * 1000)
    timings.sort()
    return {"instances": count, "median_ms": round(timings[len(timings) // 2], 2),
            "max_ms": round(timings[-1], 2),
            "plan": {"create": result.create, "terminate": len(result.terminate),
                     "retire": len(result.retire)},
            "note": "mix: 10% not alive, 2% dead, 5% expired, 1% retiring; 7 runs"}


if __name__ == "__main__":
    sys.exit(main())
