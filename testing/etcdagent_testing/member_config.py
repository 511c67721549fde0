"""How each member of a test cluster is configured: where it lives and its etcd command line.

The raft timings are much faster than etcd's defaults (100 ms heartbeat, 1 s election) so that
tests which kill a leader see the next one elected within a second; loopback has the latency
budget for it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from etcdagent_testing.certs import TLSFiles

__all__ = ["ELECTION_MS", "HEARTBEAT_MS", "EtcdFlags", "MemberLayout", "lay_out_members"]

HEARTBEAT_MS = 50
ELECTION_MS = 500


@dataclass(frozen=True)
class MemberLayout:
    """Where one member lives: its loopback URLs and its files under the cluster's base dir."""

    name: str
    client_url: str
    peer_url: str
    metrics_url: str | None  # --listen-metrics-urls, only with separate_metrics
    data_dir: Path
    log_path: Path  # etcd's zap JSON log
    output_path: Path  # etcd's stdout/stderr
    advertise_client_url: str | None = None  # another URL to advertise (a proxy in front)

    @property
    def advertised_client_url(self) -> str:
        """What the member list says: ``advertise_client_url``, else the one it listens on."""
        return self.advertise_client_url or self.client_url


def lay_out_members(
    base_dir: Path,
    size: int,
    ports: Iterator[int],
    *,
    scheme: str,
    separate_metrics: bool,
    advertise_client_urls: Mapping[str, str] | None = None,
) -> list[MemberLayout]:
    """Members m1..m``size`` on ``ports`` (client, peer, [metrics] each, in that order);
    ``advertise_client_urls`` maps a member's name to the client URL it advertises instead of
    its own (a proxy in front of it).

    Removes what an earlier start attempt left in their places: a retried start bootstraps a
    new cluster and must not find the old data dir, nor the old log lines when it waits for
    "serving peer traffic".
    """
    layouts: list[MemberLayout] = []
    for i in range(1, size + 1):
        name = f"m{i}"
        data_dir = base_dir / f"{name}.etcd"
        log_path = base_dir / f"{name}.log"
        output_path = base_dir / f"{name}.out"
        if data_dir.exists():
            shutil.rmtree(data_dir)
        for path in (log_path, output_path):
            path.unlink(missing_ok=True)
        layouts.append(
            MemberLayout(
                name,
                client_url=f"{scheme}://127.0.0.1:{next(ports)}",
                peer_url=f"{scheme}://127.0.0.1:{next(ports)}",
                metrics_url=f"http://127.0.0.1:{next(ports)}" if separate_metrics else None,
                data_dir=data_dir,
                log_path=log_path,
                output_path=output_path,
                advertise_client_url=(advertise_client_urls or {}).get(name),
            )
        )
    return layouts


@dataclass(frozen=True)
class EtcdFlags:
    """What every member's command line shares: the binary, the bootstrap token, the quota,
    TLS, and the caller's extra flags (appended last)."""

    binary: Path
    initial_cluster_token: str
    quota_backend_bytes: int | None = None
    tls_files: TLSFiles | None = None
    client_cert_auth: bool = True
    extra_args: tuple[str, ...] = ()

    def command_line(self, member: MemberLayout, initial_cluster: str) -> list[str]:
        """The argv that starts ``member`` as one of the new cluster ``initial_cluster``."""
        args = [
            str(self.binary),
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.client_url,
            "--advertise-client-urls", member.advertised_client_url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", initial_cluster,
            "--initial-cluster-token", self.initial_cluster_token,
            "--initial-cluster-state", "new",
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_MS),
            "--logger", "zap",
            "--log-outputs", str(member.log_path),
        ]  # fmt: skip
        if member.metrics_url is not None:
            args += ["--listen-metrics-urls", member.metrics_url]
        if self.quota_backend_bytes is not None:
            args += ["--quota-backend-bytes", str(self.quota_backend_bytes)]
        if self.tls_files is not None:
            args += self._tls_args(self.tls_files)
        args += self.extra_args
        return args

    def _tls_args(self, tf: TLSFiles) -> list[str]:
        args = [
            "--cert-file", str(tf.server_cert),
            "--key-file", str(tf.server_key),
            "--peer-cert-file", str(tf.server_cert),
            "--peer-key-file", str(tf.server_key),
            "--peer-trusted-ca-file", str(tf.ca_file),
            "--peer-client-cert-auth",
        ]  # fmt: skip
        if self.client_cert_auth:
            # --trusted-ca-file alone already makes etcd (3.4 and 3.5) demand a client
            # cert, so it is only passed together with --client-cert-auth.
            args += ["--trusted-ca-file", str(tf.ca_file), "--client-cert-auth"]
        return args
