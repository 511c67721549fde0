"""The layer contracts bite: a deliberate bad import in a copy of the tree fails `lint-imports`.

The lint step of the test command runs `lint-imports` on the real tree (every contract kept);
this proves each contract would catch the mistake it exists for, and that the failure names the
offending import chain, so a contributor sees which line to move.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def tree_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "tree"
    copy.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "etcdagent", copy / "etcdagent", ignore=ignore)
    shutil.copytree(ROOT / "testing", copy / "testing", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def add_import(copy: Path, module: str, statement: str) -> None:
    path = copy / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = copy / module.replace(".", "/") / "__init__.py"
    text = path.read_text()
    anchor = "from __future__ import annotations\n"
    if anchor in text:
        text = text.replace(anchor, f"{anchor}\n{statement}  # noqa\n", 1)
    else:  # a module without the future import: after its docstring
        end = text.index('"""', 3) + 3
        text = f"{text[:end]}\n{statement}  # noqa\n{text[end:]}"
    path.write_text(text)


def lint(copy: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=f"{copy}{os.pathsep}{copy / 'testing'}")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_copied_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = lint(tree_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


@pytest.mark.parametrize(
    ("module", "statement", "contract", "chain"),
    [
        (
            "etcdagent.decide.gates",
            "from etcdagent.etcd.client import ClusterClient",
            "Decide is pure",
            "etcdagent.decide.gates -> etcdagent.etcd.client",
        ),
        (  # decisions take the time as an argument, never read it
            "etcdagent.decide.plan",
            "from etcdagent.clock import utcnow",
            "Decide is pure",
            "etcdagent.decide.plan -> etcdagent.clock",
        ),
        (  # indirectly, through a module that is allowed on its own
            "etcdagent.decide.defrag",
            "import etcdagent.observe.gather",
            "Decide is pure",
            "etcdagent.observe.gather -> etcdagent.etcd.client",
        ),
        (
            "etcdagent.etcd.client",
            "import etcdagent.observe.snapshot",
            "Layers",
            "etcdagent.etcd.client -> etcdagent.observe.snapshot",
        ),
        (
            "etcdagent.observe.health",
            "import etcdagent.act.executor",
            "Observe only reads",
            "etcdagent.observe.health -> etcdagent.act.executor",
        ),
        (
            "etcdagent.agent.daemon",
            "import etcdagent.cli.commands",
            "Layers",
            "etcdagent.agent.daemon -> etcdagent.cli.commands",
        ),
        (
            "etcdagent.units",
            "import etcdagent.decide.plan",
            "Shared modules",
            "etcdagent.units -> etcdagent.decide.plan",
        ),
        (
            "etcdagent.settings",
            "import etcdagent_testing.clock",
            "The runtime never imports the test harness",
            "etcdagent.settings -> etcdagent_testing.clock",
        ),
    ],
)
def test_a_bad_import_breaks_its_contract_and_names_the_chain(
    tmp_path: Path, module: str, statement: str, contract: str, chain: str
) -> None:
    copy = tree_copy(tmp_path)
    add_import(copy, module, statement)
    result = lint(copy)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    broken = [ln for ln in out.splitlines() if ln.endswith("BROKEN")]
    assert any(ln.startswith(contract) for ln in broken), out
    assert chain in out, out
