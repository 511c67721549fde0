"""Resident memory of an idle `etcdagent run`, against a bare Python interpreter.

The project's target: an idle daemon stays under 60 MB. Baseline measured in the same run: the
RSS of `python -c "import time; time.sleep(...)"` from the same virtualenv (what any Python
process costs). The daemon runs against a real 3-member cluster with a 0.5 s interval for 30
cycles, then its RSS is read from /proc. Prints both and the ratio; writes
bench/results/daemon_memory.json.

    .venv/bin/python bench/bench_daemon_memory.py [--cycles 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import requests
from etcdagent_testing import EtcdCluster, etcd_binary, etcd_version


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=30)
    args = parser.parse_args()
    bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    time.sleep(1)
    baseline = rss_mib(bare.pid)
    bare.kill()
    bare.wait()
    with EtcdCluster(3) as cluster:
        env = {**os.environ, "ETCDAGENT_LOG__LEVEL": "warning"}
        agent = subprocess.Popen(
            [sys.executable, "-m", "etcdagent", "run", "--endpoints", cluster.endpoints[0],
             "--listen", "127.0.0.1:19479", "--interval", "0.5s"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            cycles = 0.0
            while cycles < args.cycles and time.monotonic() < deadline:
                time.sleep(0.5)
                try:
                    text = requests.get("http://127.0.0.1:19479/metrics", timeout=2).text
                except requests.RequestException:
                    continue
                for line in text.splitlines():
                    if line.startswith("etcdagent_cycle_duration_seconds_count"):
                        cycles = float(line.split()[-1])
            daemon = rss_mib(agent.pid)
        finally:
            agent.terminate()
            agent.wait(timeout=30)
    figures = {
        "bare_python_rss_mib": round(baseline, 1),
        "idle_daemon_rss_mib": round(daemon, 1),
        "cycles": cycles,
        "ratio_to_bare_python": round(daemon / baseline, 2),
    }
    print(
        f"idle daemon after {cycles:.0f} cycles: {daemon:.1f} MiB RSS; bare Python "
        f"{baseline:.1f} MiB; ratio {daemon / baseline:.2f} (target: < 60 MB)"
    )
    out = Path(__file__).with_name("results") / "daemon_memory.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "etcd": etcd_version(etcd_binary()),
                "figures": figures,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
