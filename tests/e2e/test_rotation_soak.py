"""A short run of ``benchmarks/rotation_soak.py``: rotation under continuous scraping.

The full 10-minute run (autorestart 60-120 s) is issue 4's "Done when" and is committed as
``benchmarks/results/rotation_soak.json``; this is the same scenario in 45 s with instances
living 8-15 s, so a dozen rotations happen while four clients scrape without pause.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.cli.running import server_env

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "rotation_soak.py"


def test_rotation_under_continuous_scraping_fails_no_request_and_keeps_an_instance(tmp_path):
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--duration", "45", "--autorestart-min", "8",
         "--autorestart-max", "15", "--pause", "0.02", "--out", str(out)],
        capture_output=True, text=True, timeout=180, env=server_env())
    assert out.exists(), run.stdout + run.stderr
    outcome = json.loads(out.read_text())
    assert outcome["failures"] == {}, outcome["failure_samples"]
    assert outcome["requests"] > 500
    assert outcome["rotations"] >= 4
    assert outcome["min_routable"] >= 1
    # Each replacement egresses from a new 127.0.0.N: more addresses than the pool size.
    assert outcome["distinct_egress"] > 3
    assert run.returncode == 0 and "PASS" in run.stdout
