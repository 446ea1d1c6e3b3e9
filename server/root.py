"""The composition root: the one place that builds master, manager, commander and providers
from a ``Config`` and wires them together. Nothing else constructs collaborators.
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, task
from twisted.python.threadpool import ThreadPool

from . import config as config_module
from .config import (AwsEc2ProviderConfig, Config, LocalProviderConfig, StaticProviderConfig,
                     is_loopback)
from .health import HealthChecker
from .manager import Manager
from .master.auth import ScraperAuth
from .master.proxy import MasterFactory, MasterSettings
from .master.tls import TlsCreators
from .models import Scaling
from .pool import InstancePool
from .stats import Stats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listening:
    master: str
    commander: str
    commander_user: str
    generated_password: str | None


def build_provider(provider_config: Any, *, reactor: Any) -> Any:
    if isinstance(provider_config, LocalProviderConfig):
        from .providers.local import LocalProvider
        return LocalProvider(reactor=reactor, config=provider_config)
    if isinstance(provider_config, StaticProviderConfig):
        from .providers.static import StaticProvider
        return StaticProvider(reactor=reactor, config=provider_config)
    if isinstance(provider_config, AwsEc2ProviderConfig):
        from .providers.awsec2 import AwsEc2Provider
        return AwsEc2Provider(reactor=reactor, config=provider_config)
    raise TypeError(f"no provider for {type(provider_config).__name__}")


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Server:
    """A running scrapoxy-server: ``start()`` listens, ``stop()`` shuts down cleanly."""

    def __init__(self, *, config: Config, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.pool = InstancePool()
        self.stats = Stats()
        self.providers = [build_provider(p, reactor=reactor) for p in config.providers]
        self.commander_password = config.commander.password or secrets.token_urlsafe(12)
        self.password_generated = not config.commander.password
        self.master_factory = MasterFactory(
            reactor=reactor, pool=self.pool, stats=self.stats,
            settings=MasterSettings(
                connect_timeout=config.master.connect_timeout,
                idle_timeout=config.master.idle_timeout,
                wait_for_instance=config.master.wait_for_instance,
                allow=config.master.allow, deny=config.master.deny,
                access_log=config.master.access_log),
            auth=(ScraperAuth(username=config.master.auth.username,
                              password=config.master.auth.password)
                  if config.master.auth is not None else None),
            tls=TlsCreators(verify=config.master.tls_verify, ca_file=config.master.ca_file))
        self.threadpool = ThreadPool(minthreads=1, maxthreads=8, name="commander")
        self.manager: Manager | None = None
        self.live: Any = None
        self._ports: list[Any] = []
        self._sweeper = task.LoopingCall(self.master_factory.upstreams.sweep)
        self._sweeper.clock = reactor
        self._stopped = False

    def _check_url(self, commander_port: int) -> str:
        if self.config.manager.check_url is not None:
            return self.config.manager.check_url
        host = self.config.commander.host
        if not is_loopback(host):
            host = "127.0.0.1"  # a wildcard bind still answers on loopback
        return _url(host, commander_port) + "/ip"

    def start(self) -> Listening:
        from .commander.app import create_app
        from .commander.events import LiveFeed
        from .commander.wsgi import make_site, reactor_caller

        config = self.config
        master_port = self.reactor.listenTCP(
            config.master.port, self.master_factory, interface=config.master.host, backlog=1024)
        self._ports.append(master_port)
        self.threadpool.start()
        config_view = lambda: config_module.to_dict(self.config)  # noqa: E731
        self.live = LiveFeed(clock=self.reactor, stats=self.stats, config_view=config_view)
        app = create_app(
            control=None, call_in_reactor=reactor_caller(self.reactor),
            username=config.commander.username, password=self.commander_password,
            config_view=config_view, live=self.live,
            session_instance=self.master_factory.session_instance)
        commander_port = self.reactor.listenTCP(
            config.commander.port, make_site(app, reactor=self.reactor, threadpool=self.threadpool),
            interface=config.commander.host)
        self._ports.append(commander_port)
        commander_actual = commander_port.getHost().port
        health = HealthChecker(reactor=self.reactor, url=self._check_url(commander_actual),
                               timeout=config.manager.check_timeout)
        self.manager = Manager(
            reactor=self.reactor, providers=self.providers, pool=self.pool, stats=self.stats,
            health=health, manager_config=config.manager,
            scaling=Scaling(config.scaling.min, config.scaling.required, config.scaling.max),
            downscale_delay=config.scaling.downscale_delay)
        app.config["SCRAPOXY_CONTROL"] = self.manager
        _set_control(app, self.manager)
        self.manager.start()
        self.live.start(self.manager)
        self._sweeper.start(5.0, now=False)
        return Listening(
            master=_url(config.master.host, master_port.getHost().port),
            commander=_url(config.commander.host, commander_actual),
            commander_user=config.commander.username,
            generated_password=self.commander_password if self.password_generated else None)

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Stop listening, then terminate the instances this server created (unless
        configured to keep them), and say what was done."""
        if self._stopped:
            return
        self._stopped = True
        for port in self._ports:
            yield port.stopListening()
        if self._sweeper.running:
            self._sweeper.stop()
        if self.live is not None:
            self.live.stop()
        self.master_factory.upstreams.close_all()
        terminate = self.config.manager.terminate_on_shutdown
        if self.manager is not None:
            try:
                names = yield self.manager.stop(terminate=terminate)
            except Exception:  # noqa: BLE001 - shutdown must finish whatever a provider does
                log.exception("stopping the manager failed")
                names = []
            if terminate:
                print(f"scrapoxy-server: terminated {len(names)} instance(s)"
                      + (f": {', '.join(names)}" if names else ""), flush=True)
            else:
                print("scrapoxy-server: left the instances running "
                      "(manager.terminate_on_shutdown = false)", flush=True)
        for provider in self.providers:
            try:
                yield provider.shutdown()
            except Exception:  # noqa: BLE001
                log.exception("provider %s did not shut down cleanly", provider.name)
        self.threadpool.stop()


def _set_control(app: Any, manager: Manager) -> None:
    """The commander app is built before the manager exists (the health URL needs the
    commander's port); hand it the manager now."""
    setter = getattr(app, "set_control", None)
    if setter is not None:
        setter(manager)
