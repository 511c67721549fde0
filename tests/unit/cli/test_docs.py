"""The generated reference docs are up to date and say true things about the code."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click
import click.testing
import pytest
import yaml
from prometheus_client import CollectorRegistry

from etcdagent.agent.metrics import AgentMetrics, metric_docs
from etcdagent.cli import cli, docgen
from etcdagent.settings import Settings, load_settings

DOCS = Path(__file__).resolve().parents[3] / "docs"

# Options of the commands that are not settings (docgen lists them in a table of their own).
COMMAND_ONLY = {"config_file", "output", "dry_run", "force", "once", "cluster"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ETCDAGENT_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("name", [docgen.CONFIGURATION_FILE, docgen.METRICS_FILE])
def test_committed_docs_are_up_to_date(name: str) -> None:
    path = DOCS / name
    expected = docgen.generated()[name]
    assert path.is_file(), f"{path} is missing; generate it with: {docgen.REGENERATE}"
    assert path.read_text(encoding="utf-8") == expected, (
        f"{path} is out of date; regenerate it with: {docgen.REGENERATE}"
    )


def test_generation_is_deterministic() -> None:
    assert docgen.configuration_markdown() == docgen.configuration_markdown()
    assert docgen.metrics_markdown() == docgen.metrics_markdown()


def test_check_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert docgen.main(["--docs-dir", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "configuration.md is out of date" in err
    assert docgen.REGENERATE in err
    assert docgen.main(["--docs-dir", str(tmp_path)]) == 0
    assert docgen.main(["--docs-dir", str(tmp_path), "--check"]) == 0
    (tmp_path / docgen.METRICS_FILE).write_text("stale\n", encoding="utf-8")
    assert docgen.main(["--docs-dir", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "metrics.md is out of date" in err
    assert "configuration.md" not in err


def _leaf_settings() -> list[str]:
    names = []
    for group, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            names += [f"{group}.{name}" for name in annotation.model_fields]
        else:
            names.append(group)
    return names


def test_every_setting_is_documented() -> None:
    text = docgen.configuration_markdown()
    leaves = _leaf_settings()
    assert len(leaves) > 40
    for name in leaves:
        assert f"| `{name}` |" in text, name
    for name in ("windows[].schedule", "windows[].duration", "windows[].timezone"):
        assert f"| `{name}` |" in text, name
    for doc in docgen.setting_docs():
        assert doc.description, f"{doc.name} has no description"


def test_every_metric_is_documented() -> None:
    text = docgen.metrics_markdown()
    docs = metric_docs(AgentMetrics(CollectorRegistry()).registry)
    assert len(docs) > 20
    for doc in docs:
        assert f"| `{doc.name}` | {doc.type} |" in text, doc.name
    assert "`member`, `member_id`, `alarm`" in text


def test_every_option_of_every_command_is_documented() -> None:
    """A new option maps to a setting (the tables in cli/options.py) or is a command-only one."""
    by_setting, other = docgen.command_flags()
    documented = {f.text.split(" ")[0].split(",")[0].split("/")[0] for f in other}
    for flags in by_setting.values():
        documented |= {f.text.split(" ")[0].split(",")[0].split("/")[0] for f in flags}
    settings = {d.name for d in docgen.setting_docs()}
    assert set(by_setting) <= settings
    for command in cli.commands.values():
        for param in command.params:
            assert isinstance(param, click.Option)
            assert param.opts[0] in documented, (command.name, param.opts)
    other_names = {p.name for c in cli.commands.values() for p in c.params} - {
        name
        for c in cli.commands.values()
        for p in c.params
        if (name := p.name) is not None
        and docgen._setting_of(p, docgen._flag_tables(), docgen._fields_by_name()) is not None
    }
    assert other_names == COMMAND_ONLY


def test_run_flags_map_to_the_daemon_settings() -> None:
    by_setting, _ = docgen.command_flags()
    for setting, flag in (
        ("daemon.interval", "--interval"),
        ("daemon.listen", "--listen"),
        ("daemon.local_member", "--local-member"),
        ("daemon.pushgateway", "--pushgateway"),
        ("defrag.compact_first", "--compact/--no-compact"),
        ("lock.timeout", "--lock-timeout"),
        ("log.level", "--log-level"),
    ):
        texts = [f.text for f in by_setting[setting]]
        assert any(t.startswith(flag) for t in texts), (setting, texts)


def test_flags_really_set_their_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented flag goes where the docs say: run `run` with the flag and look."""
    captured: dict[str, Settings] = {}

    class FakeProcess:
        def run(self) -> int:
            return 0

    def fake_build(load: Any, *, initial: Settings, **_: Any) -> FakeProcess:
        captured["settings"] = initial
        return FakeProcess()

    monkeypatch.setattr("etcdagent.agent.process.build_process", fake_build)
    result = click.testing.CliRunner().invoke(
        cli,
        [
            "run",
            "--interval",
            "42s",
            "--listen",
            "127.0.0.1:1234",
            "--local-member",
            "m2",
            "--retain-revisions",
            "77",
            "--no-move-leader",
        ],
    )
    assert result.exit_code == 0, result.output
    settings = captured["settings"]
    assert settings.daemon.interval == 42
    assert settings.daemon.listen == "127.0.0.1:1234"
    assert settings.daemon.local_member == "m2"
    assert settings.compaction.retain_revisions == 77
    assert settings.defrag.move_leader is False


def _env_of(setting: str) -> list[str]:
    row = next(d for d in docgen.setting_docs() if d.name == setting)
    return [e.removesuffix(" (JSON)") for e in row.env]


def _documented_env_names() -> set[str]:
    text = docgen.configuration_markdown()
    return set(re.findall(r"`(ETCDAGENT_[A-Z0-9_]+)`", text))


@pytest.mark.parametrize(
    ("setting", "value", "read", "expected"),
    [
        ("connection.endpoints", "10.0.0.1:2379,10.0.0.2:2379", "connection.endpoints",
         ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]),
        ("connection.discover", "false", "connection.discover", False),
        ("connection.request_timeout", "1m30s", "connection.request_timeout", 90.0),
        ("connection.metrics_urls", '{"m1": "http://10.0.0.1:2381"}', "connection.metrics_urls",
         {"m1": "http://10.0.0.1:2381"}),
        ("log.level", "debug", "log.level", "debug"),
        ("compaction.retain_revisions", "500", "compaction.retain_revisions", 500),
        ("defrag.min_db_size", "1GiB", "defrag.min_db_size", 1024**3),
        ("defrag.min_free_ratio", "0.3", "defrag.min_free_ratio", 0.3),
        ("gates.max_leader_changes", "7", "gates.max_leader_changes", 7),
        ("emergency.nospace", "0", "emergency.nospace", False),
        ("daemon.local_member", "https://10.0.0.3:2379", "daemon.local_member",
         "https://10.0.0.3:2379"),
        ("windows", '[{"schedule": "0 2 * * *", "duration": "1h", "timezone": "Europe/Berlin"}]',
         "windows.0.timezone", "Europe/Berlin"),
    ],
)  # fmt: skip
def test_documented_env_vars_configure_their_field(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str, read: str, expected: object
) -> None:
    names = _env_of(setting)
    assert names, setting
    documented = _documented_env_names()
    for name in names:
        assert name in documented, name
        with monkeypatch.context() as env:
            env.setenv(name, value)
            got: Any = load_settings()
            for part in read.split("."):
                got = got[int(part)] if part.isdigit() else getattr(got, part)
            assert got == expected, (name, got)


def test_long_endpoint_variable_wins_over_the_shorthand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDAGENT_ENDPOINTS", "10.0.0.1:2379")
    monkeypatch.setenv("ETCDAGENT_CONNECTION__ENDPOINTS", "10.0.0.2:2379")
    assert load_settings().connection.endpoints == ["http://10.0.0.2:2379"]


def test_every_documented_env_var_names_a_setting() -> None:
    env = {e.removesuffix(" (JSON)") for d in docgen.setting_docs() for e in d.env}
    # The variables in the prose and the examples are among those of the table (or the config).
    assert _documented_env_names() <= env | {"ETCDAGENT_CONFIG"}
    assert len(env) == len(_leaf_settings()) + 1  # + the ETCDAGENT_ENDPOINTS shorthand


def test_example_config_is_valid(tmp_path: Path) -> None:
    data = yaml.safe_load(docgen.EXAMPLE_CONFIG)
    for key in ("ca_file", "cert_file", "key_file"):  # the kubeadm paths do not exist here
        path = tmp_path / key
        path.write_text("placeholder")
        data["tls"][key] = str(path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    settings = load_settings(config_file=config)
    assert settings.connection.endpoints == ["https://127.0.0.1:2379"]
    assert [w.timezone for w in settings.windows] == ["Europe/Berlin", "UTC"]
    assert settings.defrag.move_leader is True


def test_two_cluster_example_is_valid_and_inherits_as_documented(tmp_path: Path) -> None:
    data = yaml.safe_load(docgen.TWO_CLUSTERS_CONFIG)
    tls_groups = [data["tls"], data["clusters"][1]["tls"]]
    for index, group in enumerate(tls_groups):  # the kubeadm paths do not exist here
        for key in ("ca_file", "cert_file", "key_file"):
            path = tmp_path / f"{index}-{key}"
            path.write_text("placeholder")
            group[key] = str(path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    clusters = load_settings(config_file=config).per_cluster()
    main, events = clusters["main"], clusters["events"]
    assert list(clusters) == ["main", "events"]
    assert events.connection.endpoints == ["https://127.0.0.1:2383"]
    assert main.tls.ca_file != events.tls.ca_file
    assert (main.compaction.retain, events.compaction.retain) == (300, 120)
    assert [w.schedule for w in main.windows] == ["0 3 * * *"]
    assert [w.schedule for w in events.windows] == ["30 4,16 * * *"]
    assert main.daemon.interval == events.daemon.interval == 15


def test_defaults_are_shown_in_human_units() -> None:
    rows = {d.name: d for d in docgen.setting_docs()}
    assert rows["compaction.retain"].default == "5m"
    assert rows["gates.wal_fsync_p99_max"].default == "500ms"
    assert rows["defrag.min_db_size"].default == "100 MiB"
    assert rows["defrag.min_db_size"].type == "size"
    assert rows["defrag.timeout_per_gib"].default == "2m"
    assert rows["connection.discover"].default == "true"
    assert rows["tls.ca_file"].default == ""
    assert rows["emergency.quota_use"].type == "ratio (0..1)"
    assert rows["gates.max_request_rate"].type.endswith("or null")
