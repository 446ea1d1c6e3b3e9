"""GUI panels against the commander served over fakes: the provider error banner, the chart
window taken from the server, the config with URL passwords masked. Headless Chromium."""
from __future__ import annotations

from scrapoxy_server.config import from_dict, to_dict
from tests.commander.fakes import FakeControlWithProviders, instance, provider
from tests.commander.served import serve_commander
from tests.gui.conftest import shoot

CAPACITY = "ProviderError: VcpuLimitExceeded: You have requested more vCPU capacity"


def sign_in(page, base: str) -> None:
    page.goto(base + "/")
    page.wait_for_selector("#login-form")
    page.fill("#login-password", "pw")
    page.click("#login-submit")
    page.wait_for_selector("#dashboard:not([hidden])")


def test_the_instances_view_shows_a_failing_provider_and_clears_when_it_recovers(
        reactor_thread, browser_page):
    page = browser_page
    control = FakeControlWithProviders(providers=[provider("aws", error=CAPACITY),
                                                  provider("mine", type="static")])
    config = from_dict({"providers": [{"type": "static", "name": "mine",
                                       "proxies": ["http://bob:TopSecretStatic@127.0.0.1:3999"]}]})
    with serve_commander(reactor_thread, control, config_view=lambda: to_dict(config),
                         interval=0.2) as served:
        sign_in(page, served.base)
        page.wait_for_selector("#provider-errors:not([hidden])")
        text = page.text_content("#provider-errors")
        assert "Provider aws (awsec2): creating instances fails" in text
        assert "VcpuLimitExceeded" in text and "2 attempts" in text
        assert page.eval_on_selector_all("#provider-errors li", "items => items.length") == 1
        # The chart window is the server's (serve_commander keeps 60 s).
        page.wait_for_function(
            "document.getElementById('charts-window').textContent.startsWith('last minute')")
        page.click("#config-details summary")
        page.wait_for_selector("#config-body .config-row")
        config_text = page.text_content("#config-body")
        assert "TopSecretStatic" not in config_text and "bob:***@127.0.0.1:3999" in config_text
        shoot(page, "provider-error-banner")

        control.providers = [provider("aws", instances=1), provider("mine", type="static")]
        control.instances["aws-1"] = instance("aws-1")
        page.wait_for_selector("#provider-errors", state="hidden")


def test_a_stopping_instance_is_not_counted_alive_and_an_unreachable_server_is_named(
        reactor_thread, browser_page):
    page = browser_page
    leaving = {**instance("local-2"), "status": "stopping"}
    control = FakeControlWithProviders(providers=[provider("local")],
                                       instances=[instance("local-1"), leaving])
    with serve_commander(reactor_thread, control, config_view=lambda: {}, interval=0.2) as served:
        sign_in(page, served.base)
        page.wait_for_function("document.getElementById('instances-summary').textContent"
                               " === '1 alive of 2 (1 stopping)'")
        # The server goes away between two clicks: a sentence, not fetch's "Failed to fetch".
        page.route("**/api/scaling", lambda route: route.abort())
        page.click("#wake")
        page.wait_for_function("document.getElementById('scaling-message').textContent"
                               ".includes('cannot be reached')")
        shoot(page, "stopping-and-unreachable")
