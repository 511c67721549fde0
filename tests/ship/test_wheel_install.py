"""The image's install path, without Docker: the same build context (the Dockerfile's COPY
lines), the same pinned `build` and build command in a fresh builder venv, then a fresh
runtime venv that installs only the wheel from PyPI, and the command works.

Needs PyPI (the wheel's dependencies and the build backend) and takes a minute or two.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import etcdagent

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def builder_lines() -> list[str]:
    """The builder stage's instructions, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    in_builder = False
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.upper().startswith("FROM "):
            in_builder = line.split()[-1] == "builder"
            continue
        if in_builder:
            lines.append(line)
    assert lines, "no builder stage in the Dockerfile"
    return lines


def run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDAGENT_", "PIP_"))}
    env.update(PYTHONDONTWRITEBYTECODE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-3000:]}"
    )
    return result


@pytest.mark.timeout(600)
def test_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    lines = builder_lines()
    # The build context: exactly what the builder stage copies.
    context = tmp_path / "src"
    context.mkdir()
    for line in lines:
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    shutil.copytree(
                        origin, context / source, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy2(origin, context / source)
    # The builder stage's commands: the pinned `build`, then the wheel.
    [pin] = [m.group(1) for ln in lines if (m := re.search(r"pip install .*?(build==\S+)", ln))]
    [build_cmd] = [ln for ln in lines if "-m build" in ln]
    assert build_cmd == "RUN python -m build --wheel --outdir /dist ."

    builder = tmp_path / "builder"
    run([sys.executable, "-m", "venv", str(builder)], tmp_path, 120)
    run([str(builder / "bin/python"), "-m", "pip", "install", "--no-cache-dir", pin], tmp_path, 300)
    dist = tmp_path / "dist"
    build = [str(builder / "bin/python"), "-m", "build", "--wheel", "--outdir", str(dist), "."]
    run(build, context, 300)
    [wheel] = dist.glob("etcdagent-*.whl")
    assert wheel.name.startswith(f"etcdagent-{etcdagent.__version__}-py3-none-any")
    names = zipfile.ZipFile(wheel).namelist()
    assert "etcdagent/py.typed" in names
    assert "etcdagent/observe/known_etcd_bugs.json" in names  # `doctor`'s known-bug list
    assert not any(n.startswith(("tests/", "bench/", "scripts/")) for n in names), names
    # The test harness is its own package (testing/), never part of the runtime wheel.
    assert not any(n.startswith(("etcdagent/testing", "etcdagent_testing")) for n in names), names

    # The final stage: a fresh venv with only the wheel (and its dependencies).
    venv = tmp_path / "opt-etcdagent"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, 120)
    run([str(venv / "bin/pip"), "install", "--no-cache-dir", str(wheel)], tmp_path, 480)
    run([str(venv / "bin/pip"), "check"], tmp_path, 60)

    version = run([str(venv / "bin/etcdagent"), "--version"], tmp_path, 60)
    assert etcdagent.__version__ in version.stdout
    help_text = run([str(venv / "bin/etcdagent"), "run", "--help"], tmp_path, 60).stdout
    assert "--once" in help_text
    assert "--local-member" in help_text
    # The installed package is the wheel's, not the source tree's.
    where = run(
        [str(venv / "bin/python"), "-c", "import etcdagent; print(etcdagent.__file__)"],
        tmp_path,
        60,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    # Every runtime module imports without the test extras (no cryptography, no harness).
    imports = "import etcdagent.cli, etcdagent.agent.daemon, etcdagent.act.maintenance"
    run([str(venv / "bin/python"), "-c", imports], tmp_path, 60)
    missing = run(
        [
            str(venv / "bin/python"),
            "-c",
            "import importlib.util as u; "
            "print(u.find_spec('etcdagent_testing'), u.find_spec('cryptography'))",
        ],
        tmp_path,
        60,
    ).stdout.split()
    assert missing == ["None", "None"], missing
