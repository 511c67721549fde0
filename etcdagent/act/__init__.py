"""Act: the only code that writes to etcd (executor, the cluster-wide lock, markers)."""
