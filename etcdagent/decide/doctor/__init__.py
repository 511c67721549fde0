"""`etcdagent doctor`: the cluster audited against the tuning guidance, one finding per problem.

Every check is a pure function of a :class:`~.inputs.DoctorInput` (two snapshots a lookback
apart, the signals between them, the key counts, kube-apiserver's compaction, the settings) and
returns findings with their evidence and what to do; :func:`~.run.run_checks` runs them all.
"""
