"""Hub settings: one pydantic model, loaded from a YAML file, validated once.

Errors name the file and the field (``hub.yaml: opcua.port: ...``). Nothing else in the hub reads
environment variables or files for configuration.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from aas_server.errors import ConfigurationError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Role(enum.Enum):
    """Roles of OPC UA (and later REST) users."""

    READ_ONLY = "read-only"
    OPERATOR = "operator"
    ADMIN = "admin"


class UserSettings(_Strict):
    name: Annotated[str, Field(min_length=1)]
    password: SecretStr
    role: Role = Role.READ_ONLY


class SecurityPolicyName(enum.Enum):
    NONE = "None"
    BASIC256SHA256 = "Basic256Sha256"
    AES128_SHA256_RSAOAEP = "Aes128_Sha256_RsaOaep"
    AES256_SHA256_RSAPSS = "Aes256_Sha256_RsaPss"


class RestSettings(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8081
    """0 lets the operating system choose a free port."""


class OpcUaSettings(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 4840
    """0 picks a free port at start."""
    namespace_uri: str = "urn:aas-server:twins"
    application_uri: str = "urn:aas-server:hub"
    server_name: str = "AAS twin hub"
    security_policies: list[SecurityPolicyName] = Field(
        default_factory=lambda: [
            SecurityPolicyName.BASIC256SHA256,
            SecurityPolicyName.AES128_SHA256_RSAOAEP,
            SecurityPolicyName.AES256_SHA256_RSAPSS,
        ]
    )
    """Sign and SignAndEncrypt endpoints are offered for each; ``None`` only if listed here (warned)."""
    certificate: Path | None = None
    private_key: Path | None = None
    """Server certificate (DER or PEM) and key; generated in the data directory on first start if unset."""
    allow_anonymous_read: bool = False
    """Anonymous sessions may browse and read, never write."""
    users: list[UserSettings] = Field(default_factory=list)
    trusted_certificates: Path | None = None
    """Directory of trusted client certificates and CA certificates (DER or PEM); ``<data_dir>/pki/trusted``."""
    rejected_certificates: Path | None = None
    """Where certificates of rejected clients are kept for the operator to review; ``<data_dir>/pki/rejected``."""
    certificate_revocation_lists: Path | None = None
    """Directory of CRLs of the trusted CAs (DER or PEM); ``<data_dir>/pki/crl``."""
    trust_all_client_certificates: bool = False
    """Accept any client certificate that is valid now and names the client's application URI (demo only; warned)."""


class PersistenceSettings(_Strict):
    backend: Literal["sqlite"] = "sqlite"
    sqlite_path: Path | None = None
    """Defaults to ``<data_dir>/hub.sqlite``."""


class SimulatorSettings(_Strict):
    """The simulated bottling-line Modbus device (demo and tests)."""

    enabled: bool = False
    device: str = "bottling-plc"
    """The mapping device the simulator plays; that device's endpoint is pointed at the simulator."""
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 5020
    """0 picks a free port."""
    update_interval: Annotated[float, Field(gt=0, le=60)] = 0.2
    seed: int | None = None


class EventSettings(_Strict):
    """MQTT change events (created/updated/deleted, value changes) published through a durable outbox."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    client_id: Annotated[str | None, Field(max_length=128)] = None
    username: str | None = None
    password: SecretStr | None = None
    password_env: str | None = None
    """Name of an environment variable holding the password."""
    tls: bool = False
    ca_file: Path | None = None
    repository_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "aas-server"
    """The ``{repoId}`` of the topics (``sm-repository/{repoId}/submodels/...``)."""
    qos: Literal[1, 2] = 1
    outbox_limit: Annotated[int, Field(ge=100, le=100_000_000)] = 1_000_000
    """Most events kept while the broker is away; beyond it new events are dropped, counted and logged as errors."""
    value_events: bool = True
    """Publish value changes of Properties (``.../value/updated``), not only model changes."""
    timeout: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = 5.0


class HistorySettings(_Strict):
    """Recording of every change of a device-fed (mapped) value, served as IDTA Time Series Data."""

    enabled: bool = True
    sqlite_path: Path | None = None
    """Defaults to ``<data_dir>/history.sqlite`` (apart from the model database, so recording never delays it)."""
    retention: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 30 * 86_400.0
    """Seconds a sample is kept."""
    minimum_interval: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    """Downsampling: at most one sample per element in this many seconds (0 records every change;
    a change of quality is always recorded)."""
    time_series_submodels: bool = True
    """Add an IDTA 02008 Time Series Data submodel per shell with mapped values, its segments linked to the history."""


class RollupFunction(enum.Enum):
    SUM = "sum"
    AVERAGE = "average"
    MINIMUM = "minimum"
    MAXIMUM = "maximum"
    COUNT_TRUE = "count-true"
    """How many boolean parts are true (e.g. machines running)."""
    FRACTION_TRUE = "fraction-true"
    """Share of boolean parts that are true, 0..1 (e.g. availability)."""
    WORST_QUALITY = "worst-quality"
    """The worst quality of any part, as text: good, uncertain, bad."""


class ElementAddress(_Strict):
    submodel: Annotated[str, Field(min_length=1)]
    path: Annotated[str, Field(min_length=1)]


class RollupSettings(_Strict):
    """A derived value of a process or system twin, computed from its parts whenever one of them changes."""

    target: ElementAddress
    function: RollupFunction
    parts: Annotated[list[ElementAddress], Field(min_length=1)]
    true_above: Annotated[float | None, Field(allow_inf_nan=False)] = None
    """count-true and fraction-true: a numeric part counts as true while its value is above this
    (e.g. a motor turning faster than 100 r/min counts as running); boolean parts count as themselves."""


class HubSettings(_Strict):
    """Everything the hub needs to start. Relative paths are relative to the settings file."""

    data_dir: Path = Path("data")
    twins: list[Path] = Field(default_factory=list)
    """Twin definition files (``submodels/`` format) or AAS JSON environments, loaded on first start."""
    mappings: list[Path] = Field(default_factory=list)
    device_endpoints: dict[str, str] = Field(default_factory=dict)
    """Overrides of mapping devices' ``host:port`` (OPC UA: the endpoint URL) by device name.

    E.g. to reach a device through a tunnel, or a simulated one.
    """
    simulator: SimulatorSettings = SimulatorSettings()
    rest: RestSettings = RestSettings()
    opcua: OpcUaSettings = OpcUaSettings()
    persistence: PersistenceSettings = PersistenceSettings()
    events: EventSettings = EventSettings()
    history: HistorySettings = HistorySettings()
    rollups: list[RollupSettings] = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    def resolved(self, base: Path) -> HubSettings:
        """A copy whose relative paths are made absolute against ``base``."""

        def fix(path: Path) -> Path:
            return path if path.is_absolute() else (base / path).resolve()

        opcua = self.opcua.model_copy(
            update={
                "certificate": fix(self.opcua.certificate) if self.opcua.certificate else None,
                "private_key": fix(self.opcua.private_key) if self.opcua.private_key else None,
                **{
                    name: fix(folder) if (folder := getattr(self.opcua, name)) else None
                    for name in ("trusted_certificates", "rejected_certificates", "certificate_revocation_lists")
                },
            }
        )
        sqlite = self.persistence.sqlite_path
        history = self.history.sqlite_path
        return self.model_copy(
            update={
                "data_dir": fix(self.data_dir),
                "twins": [fix(path) for path in self.twins],
                "mappings": [fix(path) for path in self.mappings],
                "opcua": opcua,
                "persistence": self.persistence.model_copy(update={"sqlite_path": fix(sqlite) if sqlite else None}),
                "history": self.history.model_copy(update={"sqlite_path": fix(history) if history else None}),
                "events": self.events.model_copy(
                    update={"ca_file": fix(self.events.ca_file) if self.events.ca_file else None}
                ),
            }
        )

    @property
    def sqlite_path(self) -> Path:
        return self.persistence.sqlite_path or self.data_dir / "hub.sqlite"

    @property
    def history_path(self) -> Path:
        return self.history.sqlite_path or self.data_dir / "history.sqlite"


def format_validation_error(error: ValidationError, location: str) -> str:
    """One line per problem: ``location: a.b[2].c: message``."""
    lines = []
    for item in error.errors():
        field_path = ""
        for part in item["loc"]:
            field_path += f"[{part}]" if isinstance(part, int) else (f".{part}" if field_path else str(part))
        lines.append(f"{location}: {field_path or '(top level)'}: {item['msg']}")
    return "\n".join(lines)


def load_yaml(path: Path) -> object:
    """Parse a YAML file safely; a syntax error becomes a ``ConfigurationError`` with line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(f"cannot read file: {error.strerror}", str(path)) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigurationError(f"YAML syntax error: {error.problem}", where) from None
    except yaml.YAMLError as error:
        raise ConfigurationError(f"YAML error: {error}", str(path)) from None


def load_settings(path: Path) -> HubSettings:
    """Load and validate a settings file; relative paths in it are taken relative to the file."""
    data = load_yaml(path)
    try:
        settings = HubSettings.model_validate(data or {})
    except ValidationError as error:
        raise ConfigurationError(format_validation_error(error, str(path))) from None
    return settings.resolved(path.parent.resolve())
