"""etcdagent's test harness: real etcd clusters on loopback for the tests, benches and demo.

It starts etcd processes with fast raft timings and throwaway data dirs, makes TLS material,
reads etcd's own logs and drives fault scenarios, so that etcdagent is tested against the
real thing. It is test tooling, installed from ``testing/`` and never shipped: etcdagent's
runtime never imports it (an import-linter contract checks that).
"""

from etcdagent_testing.binaries import EtcdBinaryError, etcd_binary, etcd_version, etcdctl_binary
from etcdagent_testing.certs import TLSFiles, make_tls_files
from etcdagent_testing.cluster import EtcdCluster
from etcdagent_testing.errors import EtcdHarnessError, EtcdRequestError
from etcdagent_testing.member import EtcdMember
from etcdagent_testing.processes import kill_all_etcd_processes

__all__ = [
    "EtcdBinaryError",
    "EtcdCluster",
    "EtcdHarnessError",
    "EtcdMember",
    "EtcdRequestError",
    "TLSFiles",
    "etcd_binary",
    "etcd_version",
    "etcdctl_binary",
    "kill_all_etcd_processes",
    "make_tls_files",
]
