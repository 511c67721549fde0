"""The settings model: every group under one root, and the order its sources are layered in.

Precedence, strongest first: command-line flags, environment (``ETCDAGENT_`` prefix, ``__`` between
group and field, e.g. ``ETCDAGENT_TLS__CA_FILE``), the config file (``--config``, YAML, TOML or
JSON), then the defaults of the groups. ``ETCDAGENT_ENDPOINTS`` is accepted as a shorthand for
``ETCDAGENT_CONNECTION__ENDPOINTS`` because it is the one variable everybody sets.

The groups live by family: :mod:`.connection` (connection, tls, auth), :mod:`.maintenance`
(compaction, defrag, lock, gates, emergency), :mod:`.process` (daemon, log) and :mod:`.windows`;
reading files and reporting errors is :mod:`.loading`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from etcdagent.settings.clusters import (
    DEFAULT_CLUSTER,
    ClusterEntry,
    describe_problems,
    merged_input,
    unique_names,
)
from etcdagent.settings.connection import (
    AuthSettings,
    ConnectionSettings,
    TLSSettings,
    with_scheme,
)
from etcdagent.settings.doctor import DoctorSettings
from etcdagent.settings.maintenance import (
    CompactionSettings,
    DefragSettings,
    EmergencySettings,
    GateSettings,
    LockSettings,
)
from etcdagent.settings.process import DaemonSettings, LogSettings
from etcdagent.settings.sources import (
    ENV_PREFIX,
    ShorthandEnvSource,
    config_file_data,
    flag_data,
)
from etcdagent.settings.windows import MaintenanceWindow


class Settings(BaseSettings):
    """Everything etcdagent can be told."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    connection: ConnectionSettings = Field(default_factory=ConnectionSettings)
    tls: TLSSettings = Field(default_factory=TLSSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    compaction: CompactionSettings = Field(default_factory=CompactionSettings)
    defrag: DefragSettings = Field(default_factory=DefragSettings)
    lock: LockSettings = Field(default_factory=LockSettings)
    gates: GateSettings = Field(default_factory=GateSettings)
    emergency: EmergencySettings = Field(default_factory=EmergencySettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    doctor: DoctorSettings = Field(default_factory=DoctorSettings)
    windows: list[MaintenanceWindow] = Field(
        default_factory=list,
        description="Maintenance windows: planned maintenance starts only inside one. Each is "
        "a cron schedule, a duration and a timezone, e.g. {schedule: '0 2 * * *', duration: 1h, "
        "timezone: Europe/Berlin}. Emergencies do not wait for a window.",
    )

    clusters: Annotated[list[ClusterEntry], AfterValidator(unique_names)] = Field(
        default_factory=list,
        description="Several etcd clusters in one agent (e.g. the events etcd beside the main "
        "one): a list of {name, connection: {endpoints: [...]}, ...}, each setting what differs "
        "and inheriting everything else from the top level. Without it: one cluster, named "
        "default, configured by the top level.",
    )
    _per_cluster: dict[str, Settings] = PrivateAttr(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            ShorthandEnvSource(settings_cls),
            InitSettingsSource(settings_cls, init_kwargs=config_file_data.get() or {}),
        )

    @model_validator(mode="after")
    def _resolve_schemes(self) -> Settings:
        """A bare host:port becomes https when TLS material is configured, else http; an
        explicit scheme is kept as written."""
        tls = self.tls.enabled
        resolved: list[str] = []
        for endpoint in self.connection.endpoints:
            url = with_scheme(endpoint, tls)
            if url not in resolved:
                resolved.append(url)
        metrics = {
            key: with_scheme(url, False) for key, url in self.connection.metrics_urls.items()
        }
        if resolved != self.connection.endpoints or metrics != self.connection.metrics_urls:
            # Frozen model: replace the group once, here, before anybody has seen it.
            object.__setattr__(
                self,
                "connection",
                self.connection.model_copy(update={"endpoints": resolved, "metrics_urls": metrics}),
            )
        return self

    @field_validator("clusters")
    @classmethod
    def _check_clusters(
        cls, entries: list[ClusterEntry], info: ValidationInfo
    ) -> list[ClusterEntry]:
        """Each cluster's own settings, built once here so that a mistake in one fails at
        start with the cluster's name and field in the message."""
        connection = info.data.get("connection")
        if entries and connection is not None and "endpoints" in connection.model_fields_set:
            raise ValueError(
                "with clusters:, each cluster names its own connection.endpoints; the top-level "
                "connection.endpoints (from the file, the environment or --endpoints) "
                "would be ignored: remove it"
            )
        problems = []  # every cluster's, not only the first one's
        for entry in entries:
            try:
                Settings.model_validate(merged_input(info.data, entry, flag_data.get()))
            except ValidationError as exc:
                problems.append(describe_problems(entry.name, exc.errors()))
        if problems:
            raise ValueError("; ".join(problems))
        return entries

    @model_validator(mode="after")
    def _build_clusters(self) -> Settings:
        self._per_cluster = {
            e.name: Settings.model_validate(merged_input(dict(self), e, flag_data.get()))
            for e in self.clusters
        }
        return self

    def per_cluster(self) -> dict[str, Settings]:
        """Name -> the settings of that cluster (without ``clusters:``: default -> these)."""
        return dict(self._per_cluster) if self.clusters else {DEFAULT_CLUSTER: self}

    def secrets(self) -> list[str]:
        """Values that must never appear in output, logs or metrics."""
        found: list[str] = []
        if self.auth.password is not None:
            found.append(self.auth.password.get_secret_value())
        for cluster in self._per_cluster.values():
            found += cluster.secrets()
        return [s for s in found if s]
