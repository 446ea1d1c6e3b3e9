"""The composition root: the one place that builds master, manager, commander and providers
from a ``Config`` and wires them together. Nothing else constructs collaborators.

It also owns the config in force: the file's, with the changes recorded in the state file
on top (``state.restore``), then the changes made through ``PATCH /api/config``
(``update_config``), which it hands to each part that can take them live and records in
the state file (``state.StateKeeper``).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import secrets
from dataclasses import dataclass
from functools import partial
from typing import Any

from twisted.internet import defer, task, threads
from twisted.internet.error import CannotListenError
from twisted.python.threadpool import ThreadPool

from . import config as config_module
from . import live_config
from .cluster.leader import MasterWorkers
from .cluster.listen import listen_shared
from .cluster.messages import auth_to_wire, settings_to_wire
from .addresses import commander_ip_url
from .config import (AwsEc2ProviderConfig, Config, LocalProviderConfig, MasterConfig,
                     StaticProviderConfig)
from .console import say
from .facade import CommanderFacade
from .health import HealthChecker
from .manager import Manager
from .master.auth import ScraperAuth
from .master.proxy import MasterFactory, MasterSettings
from .master.tls import TlsCreators
from .models import Scaling
from .pool import InstancePool
from .state import SCALING_BOUNDS, StateKeeper, StateStore, default_state_path, restore
from .stats import Stats

log = logging.getLogger(__name__)

# Pending client connections the master's listening socket holds (Twisted's default is 50).
MASTER_BACKLOG = 1024


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


def master_settings(master: MasterConfig) -> MasterSettings:
    return MasterSettings(
        connect_timeout=master.connect_timeout, idle_timeout=master.idle_timeout,
        wait_for_instance=master.wait_for_instance, allow=master.allow, deny=master.deny,
        access_log=master.access_log)


def scraper_auth(master: MasterConfig) -> ScraperAuth | None:
    if master.auth is None:
        return None
    return ScraperAuth(username=master.auth.username, password=master.auth.password)


class ListenError(Exception):
    """A port could not be bound; ``part`` is ``"master"`` or ``"commander"``."""

    def __init__(self, *, part: str, host: str, port: int, reason: str) -> None:
        shown = f"[{host}]" if ":" in host else host
        super().__init__(f"cannot listen on {shown}:{port} for the {part} ({part}.port): {reason}")
        self.part = part


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Server:
    """A running scrapoxy-server: ``start()`` listens, ``stop()`` shuts down cleanly."""

    def __init__(self, *, config: Config, reactor: Any,
                 config_path: str | os.PathLike | None = None) -> None:
        """Raises ``ConfigError`` (a ``StateFileError`` naming the file) when the state file
        cannot be applied; nothing has been started then."""
        self.reactor = reactor
        store = StateStore(default_state_path(config, config_path=config_path))
        changes = store.load()
        self.config = restore(config, changes, state_path=store.path,
                              source="the config file's" if config_path is not None
                              else "the embedded default's")
        log.info("changes made through the API are kept in %s", store.path)
        config = self.config
        # One thread: state writes land in order and never queue behind boto3 calls.
        self.state_threadpool = ThreadPool(minthreads=0, maxthreads=1, name="state")
        self.state = StateKeeper(
            store=store, changes=changes,
            run_in_thread=partial(threads.deferToThreadPool, reactor, self.state_threadpool))
        self.pool = InstancePool()
        self.stats = Stats()
        self.providers = [build_provider(p, reactor=reactor) for p in config.providers]
        self.commander_password = config.commander.password or secrets.token_urlsafe(12)
        self.password_generated = not config.commander.password
        self.master_factory = MasterFactory(
            reactor=reactor, pool=self.pool, stats=self.stats,
            settings=master_settings(config.master), auth=scraper_auth(config.master),
            tls=TlsCreators(verify=config.master.tls_verify, ca_file=config.master.ca_file))
        self.threadpool = ThreadPool(minthreads=1, maxthreads=8, name="commander")
        self.workers: Any = None  # MasterWorkers, with master.processes > 1
        self.manager: Manager | None = None
        self.health: HealthChecker | None = None
        self.live: Any = None
        self._commander_port: int | None = None
        self._ports: list[Any] = []
        self._sweeper = task.LoopingCall(self.master_factory.upstreams.sweep)
        self._sweeper.clock = reactor
        self._stopped = False

    def _check_url(self, config: Config, commander_port: int) -> str:
        if config.manager.check_url is not None:
            return config.manager.check_url
        return commander_ip_url(config.commander.host, commander_port)

    # --- the config in force ---------------------------------------------------------------

    def effective_config(self) -> Config:
        """The config in force; its scaling bounds are the manager's current ones (they
        move with the API, and ``required`` with wake and sleep)."""
        if self.manager is None:
            return self.config
        bounds = self.manager.get_scaling().as_dict()
        return dataclasses.replace(self.config,
                                   scaling=dataclasses.replace(self.config.scaling, **bounds))

    def config_view(self) -> dict:
        """What ``GET /api/config`` shows: the config in force, secrets redacted."""
        return config_module.to_dict(self.effective_config())

    def update_config(self, patch: dict) -> Any:
        """``PATCH /api/config``, on the reactor thread: validate, apply to every part that
        can change live, record in the state file. Fires with the new redacted config once
        the state file holds it, None when nothing changed; raises ``ConfigError`` naming the
        key (nothing changed)."""
        current = self.effective_config()
        new = live_config.patched(current, patch)
        if new == current:
            return None  # a secret changed counts: views compared after redaction would not
        self._apply(current, new)
        self.config = new
        diff = live_config.state_diff(current, new)
        log.info("config changed through the API: %s",
                 ", ".join(live_config.changed_paths(config_module.to_dict(current, redact=False),
                                                     config_module.to_dict(new, redact=False))))
        return self.state.record(diff).addCallback(lambda _: self.config_view())

    def _apply(self, old: Config, new: Config) -> None:
        """Hand each part its new settings (every key here is one ``live_config.LIVE_KEYS``
        allows; the others were refused before)."""
        assert self.manager is not None and self.health is not None
        if new.master != old.master:
            self.master_factory.reconfigure(settings=master_settings(new.master),
                                            auth=scraper_auth(new.master))
            if self.workers is not None:
                self.workers.reconfigure(settings=settings_to_wire(master_settings(new.master)),
                                         auth=auth_to_wire(new.master.auth))
        if new.manager != old.manager or new.scaling.downscale_delay != old.scaling.downscale_delay:
            self.manager.reconfigure(manager_config=new.manager,
                                     downscale_delay=new.scaling.downscale_delay)
            assert self._commander_port is not None
            self.health.reconfigure(url=self._check_url(new, self._commander_port),
                                    timeout=new.manager.check_timeout)
        for provider, before, after in zip(self.providers, old.providers, new.providers):
            if isinstance(after, StaticProviderConfig) and after.proxies != before.proxies:
                provider.set_proxies(after.proxies)
        if new.commander.stats_window != old.commander.stats_window:
            self.live.sampler.set_window(new.commander.stats_window)
        bounds = {key: getattr(new.scaling, key) for key in SCALING_BOUNDS
                  if getattr(new.scaling, key) != getattr(old.scaling, key)}
        if bounds:
            self.manager.update_scaling(bounds)

    # --- running ---------------------------------------------------------------------------

    def start(self) -> Listening:
        """Listen on both ports, then start the thread pools, the manager and the feeds.

        Raises ``ListenError`` naming the part whose port could not be bound; nothing is
        left running then (no port, no thread, no instance), so the caller can just exit.
        """
        from .commander.app import create_app
        from .commander.events import LiveFeed
        from .commander.wsgi import make_site, reactor_caller

        config = self.config
        self.live = LiveFeed(clock=self.reactor, stats=self.stats, config_view=self.config_view,
                             window=config.commander.stats_window)
        app = create_app(
            control=None, call_in_reactor=reactor_caller(self.reactor),
            username=config.commander.username, password=self.commander_password,
            config_view=self.config_view, config_update=self.update_config, live=self.live,
            session_instance=self.master_factory.session_instance)
        site = make_site(app, reactor=self.reactor, threadpool=self.threadpool)
        # Both ports first: a port in use must stop the start before any thread or instance
        # exists, or the process would hang on them (or bill for them) after reporting it.
        master_port = self._listen("master", config.master.host, config.master.port,
                                   partial(self._listen_master, config.master))
        commander_port = self._listen(
            "commander", config.commander.host, config.commander.port,
            partial(self.reactor.listenTCP, config.commander.port, site,
                    interface=config.commander.host))
        self.threadpool.start()
        self.state_threadpool.start()
        commander_actual = commander_port.getHost().port
        self._commander_port = commander_actual
        self.health = HealthChecker(reactor=self.reactor,
                                    url=self._check_url(config, commander_actual),
                                    timeout=config.manager.check_timeout)
        self.manager = Manager(
            reactor=self.reactor, providers=self.providers, pool=self.pool, stats=self.stats,
            health=self.health, manager_config=config.manager,
            scaling=Scaling(config.scaling.min, config.scaling.required, config.scaling.max),
            downscale_delay=config.scaling.downscale_delay)
        facade = CommanderFacade(manager=self.manager,
                                 provider_types={p.name: p.type for p in config.providers},
                                 state=self.state)
        app.config["SCRAPOXY_CONTROL"] = facade
        _set_control(app, facade)
        self.manager.start()
        self.live.start(facade)
        self._sweeper.start(5.0, now=False)
        if config.master.processes > 1:
            self._start_workers(config.master, port=master_port.getHost().port)
        return Listening(
            master=_url(config.master.host, master_port.getHost().port),
            commander=_url(config.commander.host, commander_actual),
            commander_user=config.commander.username,
            generated_password=self.commander_password if self.password_generated else None)

    def _listen(self, part: str, host: str, port: int, listen: Any) -> Any:
        try:
            listening = listen()
        except (CannotListenError, OSError) as exc:
            for opened in self._ports:
                opened.stopListening()
            self._ports.clear()
            reason = exc.socketError if isinstance(exc, CannotListenError) else exc
            raise ListenError(part=part, host=host, port=port, reason=str(reason)) from exc
        self._ports.append(listening)
        return listening

    def _listen_master(self, master: MasterConfig) -> Any:
        if master.processes == 1:
            return self.reactor.listenTCP(master.port, self.master_factory,
                                          interface=master.host, backlog=MASTER_BACKLOG)
        # Other processes will bind the same address: the kernel spreads connections.
        return listen_shared(self.reactor, host=master.host, port=master.port,
                             factory=self.master_factory, backlog=MASTER_BACKLOG)

    def _start_workers(self, master: MasterConfig, *, port: int) -> None:
        """``master.processes - 1`` worker processes on the same port, fed this process's
        pool; their traffic lands in this process's stats (``scrapoxy_server.cluster``)."""
        self.workers = MasterWorkers(
            reactor=self.reactor, count=master.processes - 1, pool=self.pool, stats=self.stats,
            start_message={
                "kind": "start", "host": master.host, "port": port, "backlog": MASTER_BACKLOG,
                "settings": settings_to_wire(master_settings(master)),
                "auth": auth_to_wire(master.auth),
                "tls": {"verify": master.tls_verify, "ca_file": master.ca_file},
                "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel())})
        d = self.workers.start()
        d.addCallback(lambda pids: log.info("%d master worker(s) serve on port %d: pids %s",
                                            len(pids), port, ", ".join(map(str, pids))))
        d.addErrback(lambda failure: log.error("master workers did not all start: %s",
                                               failure.getErrorMessage()))

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Stop listening, then terminate the instances this server created (unless
        configured to keep them), and say what was done.

        The thread pools are stopped whatever fails before: their threads are not daemons,
        and one left running keeps the process alive after the reactor stopped.
        """
        if self._stopped:
            return
        self._stopped = True
        try:
            yield self._stop_serving()
        finally:
            self.threadpool.stop()
            # Last: a state write still queued finishes before the thread ends.
            self.state_threadpool.stop()

    @defer.inlineCallbacks
    def _stop_serving(self) -> Any:
        for port in self._ports:
            yield port.stopListening()
        if self.workers is not None:
            yield self.workers.stop()
        if self._sweeper.running:
            self._sweeper.stop()
        if self.live is not None:
            self.live.stop()
        self.master_factory.upstreams.close_all()
        terminate = self.config.manager.terminate_on_shutdown
        if self.manager is not None:
            try:
                report = yield self.manager.stop(terminate=terminate)
            except Exception:  # noqa: BLE001 - shutdown must finish whatever a provider does
                log.exception("stopping the manager failed")
                report = None
            if report is None:
                say("scrapoxy-server: stopping the manager failed (see the log); instances "
                    "may still be running")
            elif terminate:
                say(f"scrapoxy-server: {report.summary()}")
            else:
                say("scrapoxy-server: left the instances running "
                    "(manager.terminate_on_shutdown = false)")
        for provider in self.providers:
            try:
                yield provider.shutdown()
            except Exception:  # noqa: BLE001
                log.exception("provider %s did not shut down cleanly", provider.name)


def _set_control(app: Any, manager: Manager) -> None:
    """The commander app is built before the manager exists (the health URL needs the
    commander's port); hand it the manager now."""
    setter = getattr(app, "set_control", None)
    if setter is not None:
        setter(manager)
