"""The agent process: one loop per cluster, one HTTP surface, one set of signals.

A kubeadm control plane that follows the tuning guide runs two etcd clusters side by side (the
main one and the events one). Each gets its own :class:`~etcdagent.agent.daemon.Daemon` (its
own thread, client, lock, retention markers, decisions, alarm watch and back-off), so a cluster
that hangs, fails or sits at NOSPACE never delays the other's cycle: nothing is shared between
the loops but the process. The process owns what there is one of: the HTTP server (/metrics
merges every cluster's registry under a ``cluster`` label, /healthz and /readyz answer per
cluster), the signal handlers (SIGTERM stops every loop, each finishing its own step within the
grace period; SIGHUP reloads every cluster's settings) and the exit code of a ``--once`` pass
(the worst of the clusters').
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from types import FrameType
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from etcdagent import __version__
from etcdagent.agent.cluster_registry import labelled_registry
from etcdagent.agent.daemon import Daemon, effective_config
from etcdagent.agent.http_server import AgentHTTPServer, push
from etcdagent.clock import utcnow
from etcdagent.errors import ConfigError, EtcdAgentError
from etcdagent.settings import Settings

log = structlog.get_logger()


class AgentProcess:
    """Every configured cluster's loop, and the process around them."""

    def __init__(self, loops: Mapping[str, Daemon], settings: Settings) -> None:
        """``loops``: each cluster's Daemon by name; ``settings``: the process-wide ones
        (listener, grace period, Pushgateway)."""
        self.settings = settings
        self.loops = dict(loops)
        self.stop = threading.Event()
        self.server: AgentHTTPServer | None = None
        self.registry = labelled_registry({n: d.registry for n, d in self.loops.items()})

    @classmethod
    def of(cls, daemon: Daemon) -> AgentProcess:
        """The process around one ready-made loop (a caller that built its own Daemon)."""
        return cls({daemon.name: daemon}, daemon.settings)

    # -- control --------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stop.set()
        for daemon in self.loops.values():
            daemon.request_stop()

    def request_reload(self) -> None:
        for daemon in self.loops.values():
            daemon.request_reload()

    # -- running --------------------------------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> int:
        """Serve and loop until SIGTERM/SIGINT; returns the exit code (0)."""
        server = self._start_server()
        handlers = {
            signal.SIGTERM: self.request_stop,
            signal.SIGINT: self.request_stop,
            signal.SIGHUP: self.request_reload,
        }
        with _signal_handlers(handlers if install_signals else {}):
            workers = {name: daemon.start() for name, daemon in self.loops.items()}
            try:
                self._wait_for_stop(workers)
            finally:
                server.stop()
                for daemon in self.loops.values():
                    daemon.stopped(workers[daemon.name])
        log.info("etcdagent stopped")
        return 0

    def _start_server(self) -> AgentHTTPServer:
        server = AgentHTTPServer(
            self.settings.daemon.listen,
            self.registry,
            healthy={n: d.healthy for n, d in self.loops.items()},
            ready={n: d.ready for n, d in self.loops.items()},
        ).start()
        self.server = server
        for daemon in self.loops.values():
            daemon.server = server
        log.info(
            "etcdagent started",
            version=__version__,
            listen=server.url,
            clusters=list(self.loops),
            config=_config_log(self.loops),
        )
        return server

    def _wait_for_stop(self, workers: Mapping[str, threading.Thread]) -> None:
        """Until a stop is asked for (or every loop ended); then give the running steps the
        grace period, together, no more."""
        while any(w.is_alive() for w in workers.values()):
            if self.stop.wait(0.2):
                break
        running = [n for n, w in workers.items() if w.is_alive()]
        if not running:
            return
        grace = self.settings.daemon.grace_period
        log.info("stopping: no new step starts", grace_period=grace, clusters=running)
        deadline = time.monotonic() + grace
        for name in running:
            workers[name].join(max(0.0, deadline - time.monotonic()))
        late = [n for n in running if workers[n].is_alive()]
        if late:
            log.warning(
                "grace period over with a step still running; exiting anyway (the "
                "maintenance lock expires by itself with its lease)",
                clusters=late,
            )

    def run_once(self, *, install_signals: bool = True) -> int:
        """CronJob mode: every cluster's pass at the same time (one stalled cluster does not
        hold the other's), then one push of all their metrics; exit 1 if any pass failed."""
        handlers = {signal.SIGTERM: self.request_stop, signal.SIGINT: self.request_stop}
        codes: dict[str, int] = {}

        def one(name: str, daemon: Daemon) -> None:
            structlog.contextvars.bind_contextvars(cluster=name)
            codes[name] = daemon.pass_once()

        with _signal_handlers(handlers if install_signals else {}):
            threads = [
                threading.Thread(target=one, args=(n, d), name=f"etcdagent-once-{n}", daemon=True)
                for n, d in self.loops.items()
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)
        ok = all(codes.get(n) == 0 for n in self.loops)
        if self.settings.daemon.pushgateway:
            try:
                push(self.registry, self.settings.daemon.pushgateway)
            except EtcdAgentError as exc:
                log.error("push to the Pushgateway failed", error=str(exc))
                ok = False
        return 0 if ok and not self.stop.is_set() else 1


def _config_log(loops: Mapping[str, Daemon]) -> dict[str, Any]:
    """The configuration in force, for the start-up log: as it always was for one cluster, by
    cluster name for several."""
    if len(loops) == 1:
        return effective_config(next(iter(loops.values())).settings)
    return {name: effective_config(daemon.settings) for name, daemon in loops.items()}


def build_process(
    load_settings: Callable[[], Settings],
    *,
    initial: Settings | None = None,
    clock: Callable[[], datetime] = utcnow,
    monotonic: Callable[[], float] = time.monotonic,
    once: bool = False,
    only: str | None = None,
) -> AgentProcess:
    """A loop for every cluster the settings name (``clusters:``, or the one ``default``), or
    for the one ``only`` names (``run --cluster``)."""
    settings = initial if initial is not None else load_settings()
    loops = {
        name: Daemon(
            _cluster_loader(load_settings, name),
            initial=own,
            registry=CollectorRegistry(),
            clock=clock,
            monotonic=monotonic,
            once=once,
            name=name,
        )
        for name, own in settings.per_cluster().items()
        if only is None or name == only
    }
    return AgentProcess(loops, settings)


def _cluster_loader(load: Callable[[], Settings], name: str) -> Callable[[], Settings]:
    """A reload of one cluster's settings: the whole file read again, that cluster taken."""

    def reload() -> Settings:
        clusters = load().per_cluster()
        if name not in clusters:
            raise ConfigError(
                f"cluster {name!r} is gone from the configuration (clusters now: "
                f"{', '.join(clusters)}); adding or removing a cluster needs a restart"
            )
        return clusters[name]

    return reload


@contextlib.contextmanager
def _signal_handlers(handlers: Mapping[signal.Signals, Callable[[], None]]) -> Iterator[None]:
    """Route each signal to its handler while inside; the previous handlers come back after."""
    previous: dict[signal.Signals, Any] = {
        sig: signal.signal(sig, _on_signal(handler)) for sig, handler in handlers.items()
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _on_signal(handler: Callable[[], None]) -> Callable[[int, FrameType | None], None]:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        handler()

    return on_signal
