"""The GUI end to end: headless Chromium against a running ``scrapoxy-server``.

A person's first session: sign in (after a wrong password), watch the instances come up,
wake the pool, see the charts move while a load runs through the master, stop an instance
and watch its replacement appear, read the config with the password masked, put the pool
to sleep. Everything on the page arrives through the event stream: no reloads.
"""
from __future__ import annotations

import threading

import requests

from tests.gui.conftest import shoot
from tests.support import wait_until

ALIVE_ROWS = "#instances-body tr:has(.dot.alive)"


def alive_names(page) -> list[str]:
    return page.eval_on_selector_all(ALIVE_ROWS, "rows => rows.map(r => r.dataset.name)")


def start_load(server, origin) -> tuple[threading.Event, list[int]]:
    stop = threading.Event()
    statuses: list[int] = []

    def run() -> None:
        with requests.Session() as session:
            session.trust_env = False
            session.proxies = {"http": server.master_url}
            while not stop.is_set():
                try:
                    statuses.append(session.get(origin.url + "/ip", timeout=5).status_code)
                except requests.RequestException:
                    statuses.append(0)
                stop.wait(0.02)

    threading.Thread(target=run, daemon=True, name="gui-load").start()
    return stop, statuses


def test_a_first_session_in_the_browser(server_factory, origin, browser_page):
    page = browser_page
    server = server_factory(instances=2, overrides={"scaling": {"min": 1, "required": 2,
                                                                 "max": 3}})
    page.goto(server.commander_url + "/")

    # Sign in, after a wrong password.
    page.wait_for_selector("#login-form")
    page.fill("#login-password", "wrong")
    page.click("#login-submit")
    page.wait_for_function(
        "document.getElementById('login-error').textContent.includes('Wrong')")
    shoot(page, "01-login-refused")
    page.fill("#login-password", "pw")
    page.click("#login-submit")
    page.wait_for_selector("#dashboard:not([hidden])")

    # The instances come up, live.
    page.wait_for_function(f"document.querySelectorAll('{ALIVE_ROWS}').length === 2")
    page.wait_for_selector("#connection.ok")
    assert page.input_value("#scaling-required") == "2"
    shoot(page, "02-instances-up")

    # Wake: required = max, a third instance comes.
    page.click("#wake")
    page.wait_for_function("document.getElementById('scaling-required').value === '3'")
    page.wait_for_function(f"document.querySelectorAll('{ALIVE_ROWS}').length === 3")
    assert server.api.scaling() == {"min": 1, "required": 3, "max": 3}

    # Traffic moves the charts and the counters.
    before = page.eval_on_selector("#chart-rps", "c => c.toDataURL()")
    stop_load, statuses = start_load(server, origin)
    try:
        page.wait_for_function(
            "Number(document.getElementById('tile-requests').textContent.replace(/[^0-9.]/g, '')) > 120")
        page.wait_for_function(
            "[...document.querySelectorAll('#instances-body td.requests')]"
            ".some(td => Number(td.textContent) > 0)")
        wait_until(lambda: page.eval_on_selector("#chart-rps", "c => c.toDataURL()") != before,
                   timeout=10, message="the requests chart to change")
        page.wait_for_function("document.getElementById('tile-rps').textContent !== '0'")
        shoot(page, "03-traffic")

        # Stop an instance: it goes, a replacement comes up.
        victim = alive_names(page)[0]
        page.click(f"#instances-body tr[data-name='{victim}'] button")
        page.wait_for_function(
            "document.getElementById('instances-message').textContent.includes('Stopped')")
        page.wait_for_function(
            f"!document.querySelector(`#instances-body tr[data-name='{victim}']`)", timeout=30_000)
        page.wait_for_function(f"document.querySelectorAll('{ALIVE_ROWS}').length === 3",
                               timeout=30_000)
        assert victim not in alive_names(page)
        shoot(page, "04-replaced")
    finally:
        stop_load.set()
    assert statuses.count(200) > 20

    # The config, with the password masked.
    page.click("#config-details summary")
    page.wait_for_selector("#config-body .config-value.secret")
    config_text = page.text_content("#config-body")
    assert '"pw"' not in config_text and "••••••" in config_text
    assert page.eval_on_selector("#config-body", "el => el.innerText").count("••••••") >= 1
    shoot(page, "05-config")

    # Sleep: required = min, the pool shrinks to one.
    page.click("#sleep")
    page.wait_for_function("document.getElementById('pool-state').textContent === 'asleep'")
    page.wait_for_function("document.querySelectorAll('#instances-body tr[data-name]').length === 1",
                           timeout=45_000)
    assert server.api.scaling()["required"] == 1
    shoot(page, "06-asleep")

    # Editing max while the pool changes elsewhere: the fields not edited keep following the
    # server, and Save sends only what was edited (required then follows the new bounds).
    page.fill("#scaling-max", "2")
    assert server.api.patch("/api/scaling", json={"required": 3}).status_code == 200
    page.wait_for_function("document.getElementById('scaling-required').value === '3'")
    assert page.input_value("#scaling-max") == "2"
    page.click("#scaling-save")
    page.wait_for_function("document.getElementById('scaling-message').textContent === 'Saved.'")
    assert server.api.scaling() == {"min": 1, "required": 2, "max": 2}
    page.wait_for_function("document.getElementById('scaling-required').value === '2'")

    # min = max: the pool neither wakes nor sleeps, and says so.
    page.fill("#scaling-min", "2")
    page.click("#scaling-save")
    page.wait_for_function("document.getElementById('pool-state').textContent === 'fixed size'")
    assert server.api.scaling() == {"min": 2, "required": 2, "max": 2}
    shoot(page, "07-fixed-size")
    # The config view shows the scaling in force, not the one it loaded with.
    page.wait_for_function("""() => {
        const group = [...document.querySelectorAll('#config-body .config-group')]
            .find((g) => g.firstChild && g.firstChild.textContent === 'scaling');
        const rows = [...group.querySelectorAll(':scope > .config-row')]
            .map((r) => r.innerText.replace(/\\s+/g, ' ').trim());
        return ['min 2', 'required 2', 'max 2'].every((want) => rows.includes(want));
    }""")
