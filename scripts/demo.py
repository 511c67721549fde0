"""Demo: etcdagent against a real 3-member etcd cluster it starts on 127.0.0.1.

Writes and overwrites data so there is history and fragmentation, then runs the real commands,
each given one endpoint only (the other members are discovered): `status`, `defrag --dry-run`,
`defrag` (compacts, keeping the last 10 revisions, then defragments followers first, the leader
last), and `status` again. Stops the cluster at the end (no process or directory is left behind).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from etcdagent_testing import EtcdCluster, etcd_binary, etcd_version


def main() -> int:
    binary = etcd_binary()
    print(f"== starting a 3-member etcd {etcd_version(binary)} cluster on 127.0.0.1", flush=True)
    started = time.monotonic()
    with EtcdCluster(3, binary=binary) as cluster:
        print(f"   up in {time.monotonic() - started:.1f}s: {', '.join(cluster.endpoints)}")
        print("== writing 300 keys of 64 KiB, each overwritten 6 times (~115 MiB)", flush=True)
        revision = cluster.write_garbage(n_keys=300, value_size=64 * 1024, rounds=6)
        print(f"   store revision is now {revision}")
        agent = str(Path(sys.executable).with_name("etcdagent"))
        env = {
            **os.environ,
            "ETCDAGENT_LOG__LEVEL": "warning",
            "ETCDAGENT_ENDPOINTS": cluster.endpoints[0],
        }
        commands = [
            ["status"],
            ["defrag", "--dry-run", "--retain-revisions", "10"],
            ["defrag", "--retain-revisions", "10", "--wait-between", "1s"],
            ["status"],
        ]
        for command in commands:
            print(
                f"== etcdagent {' '.join(command)} --endpoints {cluster.endpoints[0]}", flush=True
            )
            result = subprocess.run([agent, *command], check=False, env=env)
            if result.returncode != 0:
                print(f"   exit code {result.returncode}")
                return result.returncode
        print("== stopping the cluster", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
