"""An instance whose parent (the server) is gone stops, even when the parent was SIGKILLed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from twisted.internet import task

from scrapoxy_server.instance.parent import PARENT_PID_ENV, parent_pid_from, watch_parent
from tests.cli.running import running, wait_for


def test_watchdog_stops_the_instance_once_its_parent_changed():
    clock = task.Clock()
    parent = [4242]
    stops = []
    loop = watch_parent(clock=clock, parent_pid=4242, stop=lambda: stops.append(clock.seconds()),
                        getppid=lambda: parent[0], interval=1.0)
    clock.advance(5)
    assert stops == []
    parent[0] = 1  # re-parented to init: the server is gone
    clock.advance(1)
    assert stops == [6.0]
    assert not loop.running
    clock.advance(10)
    assert stops == [6.0]  # stops once


def test_watchdog_stops_at_once_when_the_parent_died_before_it_started():
    clock = task.Clock()
    stops = []
    watch_parent(clock=clock, parent_pid=4242, stop=lambda: stops.append(True),
                 getppid=lambda: 1)
    assert stops == [True]


@pytest.mark.parametrize("text", ["abc", "-5", "1", "0"])
def test_a_bad_parent_pid_is_refused_naming_the_variable(text):
    with pytest.raises(ValueError, match=PARENT_PID_ENV):
        parent_pid_from({PARENT_PID_ENV: text})


def test_no_parent_pid_means_no_watch():
    assert parent_pid_from({}) is None
    assert parent_pid_from({PARENT_PID_ENV: "1234"}) == 1234


MIDDLE = textwrap.dedent("""
    import os, subprocess, sys, time
    env = dict(os.environ, SCRAPOXY_PARENT_PID=str(os.getpid()), PYTHONUNBUFFERED="1")
    child = subprocess.Popen([sys.executable, "-m", "scrapoxy_server.instance", "--port", "0"],
                             stdout=subprocess.PIPE, env=env)
    child.stdout.readline()
    print(child.pid, flush=True)
    time.sleep(120)
""")


def test_instance_exits_when_its_parent_is_killed_with_sigkill():
    middle = subprocess.Popen([sys.executable, "-c", MIDDLE], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ), start_new_session=True)
    try:
        instance_pid = int(middle.stdout.readline())
        assert running(instance_pid)
        middle.send_signal(signal.SIGKILL)
        middle.wait(5)
        assert wait_for(lambda: not running(instance_pid), timeout=5), \
            "scrapoxy-instance outlived its SIGKILLed parent"
    finally:
        try:
            os.killpg(middle.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        middle.stdout.close()
