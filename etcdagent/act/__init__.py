"""Act: the only code that writes to etcd.

The executor and its step runners, the cluster-wide maintenance lock and the retention markers;
every write re-checks the gates on a fresh snapshot first, because a plan is made from an older one.
"""
