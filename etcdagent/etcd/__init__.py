"""The wire: the only code that speaks to etcd (client, transport, errors, /metrics reader)."""
