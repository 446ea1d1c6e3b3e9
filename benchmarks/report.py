"""Turn measured points into the ratios the issue sets as targets, and into Markdown tables."""
from __future__ import annotations

from typing import Any

# Labels of the measured paths, as they appear in the JSON and the tables.
ORIGIN = "origin direct"
SQUID = "squid alone"
HAPROXY = "haproxy -> squid"
MASTER = "master -> squid"
HTTPS_DIRECT = "origin TLS direct"
HTTPS_MASTER = "master HTTPS-by-Location -> squid"
FIRST_HOP = {SQUID: "squid", HAPROXY: "haproxy", MASTER: "master", HTTPS_MASTER: "master"}


def first_hop(path: str) -> str | None:
    """The process a path's request reaches first ("CONNECT: master -> squid" -> master)."""
    path = path.removeprefix("CONNECT: ")
    if path.startswith("master"):
        return "master"
    return FIRST_HOP.get(path)


def find(points: list[dict], path: str, body: str, concurrency: int) -> dict | None:
    for point in points:
        if (point["path"] == path and point["body"] == body
                and point["concurrency"] == concurrency and not point.get("error")):
            return point
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def ratios(results: dict[str, Any]) -> list[dict]:
    """The targets of issue 7, each with its measured value and whether it is met."""
    points = results["points"]
    top = max(results["config"]["concurrency"])
    out = []

    def target(name: str, value: Any, goal: str, met: bool | None, detail: str) -> None:
        out.append({"target": name, "value": value, "goal": goal, "met": met, "detail": detail})

    master, haproxy, squid = (find(points, p, "1k", top) for p in (MASTER, HAPROXY, SQUID))
    value = _ratio(master and master["rps"], haproxy and haproxy["rps"])
    target("throughput: master / haproxy req/s", value, ">= 0.75",
           None if value is None else value >= 0.75,
           f"c={top}, 1 KiB; master {master and master['rps']}, haproxy {haproxy and haproxy['rps']}")

    m_cpu = master and master["cpu_us_per_request"].get("master")
    s_cpu = squid and squid["cpu_us_per_request"].get("squid")
    value = _ratio(m_cpu, s_cpu)
    target("CPU/request: master / squid", value, "<= 1",
           None if value is None else value <= 1.0,
           f"c={top}, 1 KiB; master {m_cpu} us (master->squid row), squid {s_cpu} us (squid alone)")
    h_cpu = haproxy and haproxy["cpu_us_per_request"].get("haproxy")
    target("CPU/request: haproxy / squid (the peer, for scale)", _ratio(h_cpu, s_cpu), "", None,
           f"haproxy {h_cpu} us")

    master1, squid1, haproxy1 = (find(points, p, "1k", 1) for p in (MASTER, SQUID, HAPROXY))
    added = None
    if master1 and squid1 and master1["p50_ms"] is not None and squid1["p50_ms"] is not None:
        added = round(master1["p50_ms"] - squid1["p50_ms"], 3)
    target("p50 added by the master at c=1 (ms)", added, "<= 0.25",
           None if added is None else added <= 0.25,
           f"1 KiB; master {master1 and master1['p50_ms']} ms, squid {squid1 and squid1['p50_ms']} ms")
    if haproxy1 and squid1 and haproxy1["p50_ms"] is not None and squid1["p50_ms"] is not None:
        target("p50 added by haproxy at c=1 (ms, for scale)",
               round(haproxy1["p50_ms"] - squid1["p50_ms"], 3), "", None, "")

    stream = results.get("memory", {}).get("stream")
    if stream:
        growth = stream.get("growth_mib")
        target("RSS growth, 50 clients x 100 MiB (MiB)", growth, "<= 64",
               None if growth is None else growth <= 64 and not stream.get("error"),
               f"idle {stream.get('idle_rss_mib')} MiB, peak {stream.get('peak_rss_mib')} MiB, "
               f"{stream.get('complete')}/{stream.get('clients')} complete"
               + (f"; {stream['error']}" if stream.get("error") else ""))
    idle = results.get("memory", {}).get("idle")
    if idle:
        target("10,000 idle client connections", f"{idle['opened']} open, "
               f"{idle['closed_by_master_during_hold']} closed", "all held", idle["ok"],
               f"RSS {idle['rss_before_mib']} -> {idle['rss_held_mib']} MiB; probes "
               f"{idle['probe_200']}/{idle['probe_requests']} 200; fresh "
               f"{idle['fresh_connection_status']}")
    pool = results.get("pool")
    if pool and pool.get("ratio") is not None:
        target(f"throughput: {pool['large']} / {pool['small']} instances", pool["ratio"],
               ">= 0.95", pool["ratio"] >= 0.95,
               f"req/s {pool['large_rps']} vs {pool['small_rps']}; health checks every 2 s; "
               f"idle master CPU {pool.get('idle_cpu_percent_' + str(pool['large']))}% of a core "
               f"with {pool['large']}, {pool.get('idle_cpu_percent_' + str(pool['small']))}% "
               f"with {pool['small']}")
    if pool and pool.get("ratio_quiet") is not None:
        target(f"throughput: {pool['large']} / {pool['small']} instances, checks quiet",
               pool["ratio_quiet"], ">= 0.95", pool["ratio_quiet"] >= 0.95,
               f"req/s {pool['large_quiet_rps']} vs {pool['small_quiet_rps']}; side by side, "
               "alternating rounds")
    if pool and pool.get("error"):
        target("throughput: pool size", None, ">= 0.95", None, pool["error"][:200])
    planner = results.get("planner")
    if planner:
        ms = planner.get("median_ms")
        target(f"plan() for {planner.get('instances')} instances (ms)", ms, "< 100",
               None if ms is None else ms < 100, planner.get("note", ""))
    return out


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def points_table(points: list[dict]) -> str:
    rows = ["| path | body | c | req/s | p50 ms | p99 ms | CPU us/req: first hop | squid | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for p in points:
        hop = first_hop(p["path"])
        cpu = p["cpu_us_per_request"]
        first = _fmt(cpu.get(hop), 0) + f" ({hop})" if hop and hop in cpu else "-"
        if p.get("error"):
            errors = p["error"][:80]
        elif p.get("non_2xx") or p.get("socket_errors"):
            parts = [f"non-2xx {p['non_2xx']}"] if p.get("non_2xx") else []
            parts += [f"{k} {v}" for k, v in p.get("socket_errors", {}).items() if v]
            errors = ", ".join(parts) or "0"
        else:
            errors = "0"
        rows.append(f"| {p['path']} | {p['body']} | {p['concurrency']} | {_fmt(p['rps'])} | "
                    f"{_fmt(p['p50_ms'], 3)} | {_fmt(p['p99_ms'], 3)} | {first} | "
                    f"{_fmt(cpu.get('squid'), 0)} | {errors} |")
    return "\n".join(rows)


def ratios_table(items: list[dict]) -> str:
    rows = ["| target | measured | goal | met | detail |", "|---|---:|---|---|---|"]
    for item in items:
        met = {True: "yes", False: "**no**", None: ""}[item["met"]]
        rows.append(f"| {item['target']} | {_fmt(item['value'], 3)} | {item['goal']} | {met} | "
                    f"{item['detail']} |")
    return "\n".join(rows)


def machine_line(machine: dict) -> str:
    return (f"{machine.get('cpu_model')}, {machine.get('nproc')} CPUs, Linux "
            f"{machine.get('kernel')}, Python {machine.get('python')}; "
            + ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items()))


def markdown(results: dict[str, Any]) -> str:
    parts = [
        f"Command: `{results['command']}`  ",
        f"Machine: {machine_line(results['machine'])}  ",
        f"Date: {results['started_at']}; {results['config']['duration']:g} s per point, "
        f"median of {results['config'].get('repeat', 1)} round(s); load average at start "
        f"{' '.join(f'{x:.2f}' for x in results['machine'].get('loadavg_at_start', ()))}",
        "",
        points_table(results["points"]),
        "",
        ratios_table(results["ratios"]),
    ]
    return "\n".join(parts)
