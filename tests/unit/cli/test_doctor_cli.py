"""`etcdagent doctor` without etcd: bad usage exits 2, and the JSON keeps its documented shape."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from etcdagent_testing.snapshots import WHEN, cluster, settings, snap, three

from etcdagent.cli import cli
from etcdagent.cli.doctor_view import render_text, report_json
from etcdagent.decide.doctor.inputs import DoctorInput
from etcdagent.decide.doctor.run import run_checks
from etcdagent.observe.known_bugs import load_known_bugs


@pytest.mark.parametrize("lookback", ["0", "-5s", "soon"])
def test_a_bad_lookback_is_bad_usage(lookback: str) -> None:
    result = CliRunner().invoke(cli, ["doctor", "--lookback", lookback])
    assert result.exit_code == 2
    assert "--lookback" in result.output


def test_doctor_is_a_command() -> None:
    result = CliRunner().invoke(cli, ["doctor", "--help"])
    assert result.exit_code == 0
    assert "--lookback" in result.output and "--output" in result.output


def _doc(after: object) -> DoctorInput:
    assert hasattr(after, "members")
    return DoctorInput(
        after=after,  # type: ignore[arg-type]
        settings=settings(),
        now=WHEN,
        lookback=300.0,
        known_bugs=load_known_bugs(),
    )


def test_json_schema_fields() -> None:
    doc = _doc(cluster(snap("m1"), snap("m2")))
    report = run_checks(doc)
    answer = json.loads(json.dumps(report_json(report, doc)))
    assert set(answer) == {
        "schema_version",
        "cluster_id",
        "taken_at",
        "first_snapshot_at",
        "lookback_seconds",
        "worst",
        "exit_code",
        "counts",
        "known_bugs_reviewed",
        "findings",
    }
    assert answer["schema_version"] == 1
    assert answer["exit_code"] == 1 and answer["worst"] == "critical"  # 3.5.1: a known bug
    assert set(answer["counts"]) == {"ok", "info", "warning", "critical"}
    for finding in answer["findings"]:
        assert set(finding) == {"check", "severity", "member", "summary", "action", "evidence"}
    [count] = [f for f in answer["findings"] if f["check"] == "member_count"]
    assert count["severity"] == "warning" and count["evidence"]["voting_members"] == 2


def test_text_shows_each_finding_with_its_fix() -> None:
    doc = _doc(three())
    text = render_text(run_checks(doc), doc)
    lines = text.splitlines()
    assert lines[0].split() == ["SEVERITY", "CHECK", "MEMBER", "EVIDENCE"]
    assert any(line.split()[:3] == ["warning", "fragmentation", "m1"] for line in lines)
    assert any("-> no maintenance window is configured" in line for line in lines)
    assert lines[-1].startswith("cluster 1: critical (")
