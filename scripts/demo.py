"""Demo: etcdagent against a real 3-member etcd cluster it starts on 127.0.0.1.

Writes and overwrites data so there is history and fragmentation to look at, then runs the real
`etcdagent status` command, given one endpoint only (the others are discovered), and stops the
cluster (no process or directory is left behind).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from etcdagent.testing import EtcdCluster, etcd_binary, etcd_version


def main() -> int:
    binary = etcd_binary()
    print(f"== starting a 3-member etcd {etcd_version(binary)} cluster on 127.0.0.1", flush=True)
    started = time.monotonic()
    with EtcdCluster(3, binary=binary) as cluster:
        print(f"   up in {time.monotonic() - started:.1f}s: {', '.join(cluster.endpoints)}")
        print("== writing 300 keys of 8 KiB, each overwritten 5 times", flush=True)
        revision = cluster.write_garbage(n_keys=300, value_size=8192, rounds=5)
        print(f"   store revision is now {revision}")
        command = [
            str(Path(sys.executable).with_name("etcdagent")),
            "status",
            "--endpoints",
            cluster.endpoints[0],
        ]
        print(f"== {' '.join(['etcdagent', *command[1:]])}", flush=True)
        result = subprocess.run(command, check=False, env=os.environ.copy())
        print("== stopping the cluster", flush=True)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
