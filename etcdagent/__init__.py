"""etcdagent: keeps etcd small and healthy without costing the cluster its quorum."""

__version__ = "0.1.0"
