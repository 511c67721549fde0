"""Shared fixtures: real etcd clusters (see etcdagent_testing).

Pick the etcd version with ``ETCDAGENT_TEST_ETCD=3.5.1|3.4.23|/path/to/etcd`` (default 3.5.1;
3.4.23 needs ``bash scripts/install-etcd`` first).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from etcdagent_testing import EtcdCluster
from etcdagent_testing import etcd_binary as find_etcd_binary
from etcdagent_testing.services import serve_on_free_port

ClusterFactory = Callable[..., EtcdCluster]

_LOG_TAIL_LINES = 20


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: starts real etcd processes (see tests/conftest.py)"
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item (``item.rep_setup``, ``rep_call``, ...)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"rep_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


def _dump_logs(request: pytest.FixtureRequest, clusters: list[EtcdCluster]) -> None:
    for cluster in clusters:
        print(
            f"\n===== etcd {cluster.version} logs for {request.node.nodeid} "
            f"(last {_LOG_TAIL_LINES} lines per member) =====",
            file=sys.stderr,
        )
        for member in cluster.members:
            print(member.log_tail(_LOG_TAIL_LINES), file=sys.stderr)


@pytest.fixture(scope="session")
def etcd_binary() -> Path:
    """The etcd binary the tests run (``ETCDAGENT_TEST_ETCD``, default 3.5.1)."""
    return find_etcd_binary()


@pytest.fixture
def etcd_cluster_factory(
    request: pytest.FixtureRequest, etcd_binary: Path
) -> Iterator[ClusterFactory]:
    """A callable taking :class:`EtcdCluster` kwargs and returning a started cluster.

    Every cluster it made is stopped at teardown; if the test failed, the tail of each
    member's log goes to stderr.
    """
    clusters: list[EtcdCluster] = []

    def factory(size: int = 3, **kwargs: Any) -> EtcdCluster:
        kwargs.setdefault("binary", etcd_binary)
        cluster = EtcdCluster(size, **kwargs)
        clusters.append(cluster)
        return cluster.start()

    try:
        yield factory
    finally:
        if _failed(request):
            _dump_logs(request, clusters)
        for cluster in clusters:
            cluster.stop()


@pytest.fixture
def etcd_cluster(etcd_cluster_factory: ClusterFactory) -> EtcdCluster:
    """A started, healthy 3-member cluster (plain http, no auth)."""
    return etcd_cluster_factory(3)


# -- Prometheus Pushgateway (for `run --once --pushgateway`) ---------------------------------

PUSHGATEWAY_BINARIES = (
    Path(__file__).resolve().parents[1] / ".tools/pushgateway/usr/bin/prometheus-pushgateway",
    Path("/usr/bin/prometheus-pushgateway"),
)


def _pushgateway_binary() -> Path | None:
    configured = os.environ.get("ETCDAGENT_TEST_PUSHGATEWAY")
    if configured:
        return Path(configured)
    return next((p for p in PUSHGATEWAY_BINARIES if p.exists()), None)


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh Pushgateway (in-memory, no persistence), stopped at teardown."""
    binary = _pushgateway_binary()
    if binary is None or not binary.exists():
        pytest.fail(
            "prometheus-pushgateway not found: run `bash scripts/setup --test-tools` "
            "(or set ETCDAGENT_TEST_PUSHGATEWAY=/path/to/pushgateway)"
        )
    log_path = tmp_path / "pushgateway.log"

    def argv(port: int, _attempt: int) -> list[str]:
        return [
            str(binary),
            f"--web.listen-address=127.0.0.1:{port}",
            # Debian's build persists to /var/lib/prometheus by default: keep it in memory.
            "--persistence.file=",
            "--log.level=warn",
        ]

    with serve_on_free_port(argv, log_path, what="the pushgateway", timeout=10) as (url, _proc):
        yield url


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ETCDAGENT_* variable of the developer's shell leaks into load_settings."""
    for key in list(os.environ):
        if key.startswith("ETCDAGENT_"):
            monkeypatch.delenv(key)
    yield
