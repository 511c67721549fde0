"""Test harness: real etcd clusters (3.4 / 3.5) on loopback, throwaway TLS material."""

from etcdagent_testing.binaries import EtcdBinaryError, etcd_binary, etcd_version, etcdctl_binary
from etcdagent_testing.certs import TLSFiles, make_tls_files
from etcdagent_testing.cluster import (
    EtcdCluster,
    EtcdHarnessError,
    EtcdMember,
    EtcdRequestError,
    kill_all_etcd_processes,
)

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
