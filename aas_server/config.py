"""Hub settings: one pydantic model, loaded from a YAML file, validated once.

Errors name the file and the field (``hub.yaml: opcua.port: ...``). Nothing else in the hub reads
environment variables or files for configuration.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from aas_server.errors import ConfigurationError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Role(enum.Enum):
    """Roles of OPC UA users; access rules (``security.rules``) name them as they name REST roles."""

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


class RestTlsSettings(_Strict):
    """HTTPS for the REST API (TLS 1.2 and 1.3 only): a certificate and key from files, or a self-signed pair."""

    certificate: Path | None = None
    """PEM file: the server certificate, then any intermediate CA certificates."""
    private_key: Path | None = None
    """PEM file: the certificate's private key, not encrypted (protect it with file permissions)."""
    self_signed: bool = False
    """Demo only: generate ``<data_dir>/rest-tls/cert.pem`` and ``key.pem`` on the first start and reuse them
    (names the REST host, ``localhost`` and ``127.0.0.1``); clients must be told to trust that certificate."""

    @model_validator(mode="after")
    def _one_source(self) -> RestTlsSettings:
        if self.self_signed and (self.certificate or self.private_key):
            raise ValueError("give either certificate and private_key, or self_signed: true, not both")
        if not self.self_signed and self.certificate is None and self.private_key is None:
            raise ValueError("give certificate and private_key, or self_signed: true")
        if self.certificate is not None and self.private_key is None:
            raise ValueError("private_key is missing: certificate and private_key go together")
        if self.private_key is not None and self.certificate is None:
            raise ValueError("certificate is missing: certificate and private_key go together")
        return self

    def resolved(self, fix: Callable[[Path], Path]) -> RestTlsSettings:
        """A copy with the certificate and key paths passed through ``fix`` (made absolute)."""
        return self.model_copy(
            update={
                "certificate": fix(self.certificate) if self.certificate else None,
                "private_key": fix(self.private_key) if self.private_key else None,
            }
        )


class RestSettings(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8081
    """0 lets the operating system choose a free port."""
    tls: RestTlsSettings | None = None
    """HTTPS instead of plain HTTP (``docs/security.md``)."""


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
    faults: list[Literal["bearing-wear", "jam", "temperature-excursion", "sensor-stuck"]] = Field(default_factory=list)
    """Faults the simulator plays from its start (``aas-server demo --fault``; docs in devices/bottling_line.py)."""


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


class AccessOperation(enum.Enum):
    """What a request does, for access rules (``docs/security.md`` maps every REST route to one)."""

    READ = "read"
    """Reading one object or listing objects (listings show only what may be read)."""
    CREATE = "create"
    """Creating a shell, submodel, element or concept description."""
    UPDATE = "update"
    """Replacing or patching an object or its metadata (PUT, PATCH; submodel references of a shell)."""
    DELETE = "delete"
    """Deleting a shell, submodel, element, concept description or package file."""
    WRITE_VALUE = "write-value"
    """Writing values only (``PATCH .../$value``, OPC UA writes of Property values)."""
    INVOKE = "invoke"
    """Invoking an Operation and reading the status and results of its invocations."""
    UPLOAD = "upload"
    """Storing or removing file contents: attachments, thumbnails, AASX package uploads."""
    EXPORT = "export"
    """Bulk downloads: ``/serialization``, ``/rdf``, ``/sparql``, AASX package files."""
    ACKNOWLEDGE = "acknowledge"
    """Operator actions on an alarm (acknowledge, confirm, comment, shelve), judged on the rule's element."""
    SIMULATE = "simulate"
    """Running, reading, cancelling and comparing what-if simulations of a process shell, judged on the shell."""


class TokenAlgorithm(enum.Enum):
    HS256 = "HS256"
    RS256 = "RS256"


class TokenSettings(_Strict):
    """Bearer tokens (JWT, RFC 7519) accepted by the REST API: signature, ``iss``, ``aud``, ``exp`` checked."""

    issuer: Annotated[str, Field(min_length=1)]
    audience: Annotated[str, Field(min_length=1)]
    algorithms: Annotated[list[TokenAlgorithm], Field(min_length=1)] = Field(
        default_factory=lambda: [TokenAlgorithm.RS256]
    )
    hs256_secret_env: str | None = None
    """Name of the environment variable holding the HS256 secret (at least 32 bytes)."""
    rs256_public_key: Path | None = None
    """PEM file with the issuer's RSA public key (RS256)."""
    roles_claim: Annotated[str, Field(min_length=1)] = "roles"
    """Claim holding the roles: a list of names or one space-separated string; dots reach into objects
    (``realm_access.roles``)."""
    leeway: Annotated[float, Field(ge=0, le=600, allow_inf_nan=False)] = 30.0
    """Seconds of clock difference tolerated for ``exp``, ``nbf`` and ``iat``."""


class ApiKeySettings(_Strict):
    """An API key (header ``X-API-Key``): only its SHA-256 is kept, or it is read from the environment."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    roles: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    sha256: Annotated[str | None, Field(pattern=r"^[0-9a-fA-F]{64}$")] = None
    """Hex SHA-256 of the key (``printf %s KEY | sha256sum``)."""
    key_env: str | None = None
    """Name of an environment variable holding the key itself."""

    @model_validator(mode="after")
    def _one_source(self) -> ApiKeySettings:
        if (self.sha256 is None) == (self.key_env is None):
            raise ValueError("give exactly one of sha256 and key_env")
        return self


class AccessRule(_Strict):
    """One access rule (in the spirit of IDTA-01004 Part 4): roles x operations x targets -> allow or deny.

    Target lists are globs (``*`` any text, ``?`` one character; nothing else is special); an empty
    list does not restrict. All given lists must match. A rule for an element also covers the
    elements below it.
    """

    roles: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    """Role names; ``*`` is any authenticated or anonymous caller with a role."""
    operations: Annotated[list[AccessOperation], Field(min_length=1)]
    """Operations the rule is about; ``*`` is all of them."""
    shells: list[str] = Field(default_factory=list)
    """Shell ids; a submodel (and its elements) belongs to every shell referencing it."""
    submodels: list[str] = Field(default_factory=list)
    """Submodel ids."""
    concept_descriptions: list[str] = Field(default_factory=list)
    """Concept description ids."""
    paths: list[str] = Field(default_factory=list)
    """idShort paths of elements (``Status``, ``Status.*``, ``Bearings[0].Temperature``)."""
    semantic_ids: list[str] = Field(default_factory=list)
    """Semantic ids (first key value) of the element, of one of its parents or of its submodel."""
    effect: Literal["allow", "deny"] = "allow"

    @field_validator("operations", mode="before")
    @classmethod
    def _all_operations(cls, value: object) -> object:
        if isinstance(value, list) and "*" in value:
            return [operation.value for operation in AccessOperation]
        return value


class SecuritySettings(_Strict):
    """Access control of the REST API (and the rules behind OPC UA users' writes); ``docs/security.md``."""

    enabled: bool = True
    """Off: REST is open to everyone (warned at start). On without credentials or rules: every request is 401."""
    anonymous_role: str | None = None
    """Role of requests without credentials (e.g. a read-only role); none: they are answered 401."""
    tokens: TokenSettings | None = None
    api_keys: list[ApiKeySettings] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=list)
    """Further role names rules may use (those tokens carry); ``check`` reports rules naming unknown roles."""
    rules: list[AccessRule] = Field(default_factory=list)
    """Deny by default: allowed when an allow rule matches and no deny rule does."""
    audit_log: Path | None = None
    """JSON lines of every write and every denial; ``<data_dir>/audit.log``."""

    def resolved(self, fix: Callable[[Path], Path]) -> SecuritySettings:
        """A copy with the key file and audit log paths passed through ``fix`` (made absolute)."""
        tokens = self.tokens
        if tokens is not None and tokens.rs256_public_key is not None:
            tokens = tokens.model_copy(update={"rs256_public_key": fix(tokens.rs256_public_key)})
        return self.model_copy(update={"tokens": tokens, "audit_log": fix(self.audit_log) if self.audit_log else None})


class PredictiveSettings(_Strict):
    """Predictive maintenance in the twin (``docs/analytics.md``): each item is checked at start by
    ``analytics.predictive`` (``DetectorConfig`` of anomaly detectors, ``RulConfig`` of wear signals)."""

    detectors: list[dict[str, object]] = Field(default_factory=list)
    wear: list[dict[str, object]] = Field(default_factory=list)
    sqlite_path: Path | None = None
    """Detector and RUL states kept across restarts; defaults to ``<data_dir>/predictive.sqlite``."""


class AnalyticsSettings(_Strict):
    """Condition monitoring: rules files (``docs/analytics.md``), evaluated on the change bus."""

    rules_files: list[Path] = Field(default_factory=list)
    """Monitoring rules files (YAML or JSON), checked against the model at start and by ``check``."""
    tick: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = 1.0
    """Seconds between clock ticks of time-based rules (delays, stuck, bad quality, shelving expiry)."""
    sqlite_path: Path | None = None
    """Alarm states kept across restarts; defaults to ``<data_dir>/alarms.sqlite``."""
    kpi_files: list[Path] = Field(default_factory=list)
    """Machine-state model files (``assets``: signals, shift calendar, counters) whose ISO 22400-2 KPIs
    are written into a ``KPIs`` submodel of each asset's shell (``docs/analytics.md``)."""
    kpi_interval: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 5.0
    """Seconds between KPI computations."""
    alarm_submodels: bool = False
    """Add an ``Alarms`` submodel to each shell with rules on its elements: a BasicEventElement per rule,
    observing the rule's element, its ``messageTopic`` the alarm's MQTT topic."""
    predictive: PredictiveSettings = PredictiveSettings()


class SimulationSettings(_Strict):
    """What-if simulation jobs of process twins (``docs/simulation.md``): bounds on what a job may cost."""

    max_horizon: Annotated[float, Field(gt=0, le=365 * 24 * 3600, allow_inf_nan=False)] = 7 * 24 * 3600.0
    """Seconds of simulated time a scenario may ask for at most."""
    max_replications: Annotated[int, Field(ge=1, le=10_000)] = 100
    """Replications a scenario may ask for at most."""
    max_events: Annotated[int, Field(ge=1000, le=1_000_000_000)] = 20_000_000
    """Simulated events (station cycles, failures, arrivals) one replication may run at most: a line whose
    means would need more is refused (400), a replication that reaches it fails its job."""
    workers: Annotated[int, Field(ge=1, le=256)] = 2
    """Worker processes of the hub's one replication pool (started on the first job)."""
    worker_niceness: Annotated[int, Field(ge=0, le=19)] = 10
    """``nice`` increment of the worker processes (POSIX): the CPU goes to the live hub first, so that REST and
    OPC UA keep their latency while replications run (0: same priority)."""
    max_jobs: Annotated[int, Field(ge=1, le=1000)] = 2
    """Jobs queued or running at once; one more is refused (429)."""
    buffer_capacity: Annotated[int, Field(ge=1, le=1_000_000)] = 50
    """Parts between two stations of a line built from the twin (the twin has no buffer sizes); a scenario
    overrides it by ``buffers[i].capacity``, a Simulation Models submodel of the shell replaces it."""
    kept_jobs: Annotated[int, Field(ge=1, le=100_000)] = 100
    """Finished jobs kept in the job table (and their results); the oldest go first."""


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
    analytics: AnalyticsSettings = AnalyticsSettings()
    simulation: SimulationSettings = SimulationSettings()
    security: SecuritySettings = SecuritySettings()
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
        predictive_db = self.analytics.predictive.sqlite_path
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
                "security": self.security.resolved(fix),
                "analytics": self.analytics.model_copy(
                    update={
                        "rules_files": [fix(path) for path in self.analytics.rules_files],
                        "kpi_files": [fix(path) for path in self.analytics.kpi_files],
                        "sqlite_path": fix(self.analytics.sqlite_path) if self.analytics.sqlite_path else None,
                        "predictive": self.analytics.predictive.model_copy(
                            update={"sqlite_path": fix(predictive_db) if predictive_db else None}
                        ),
                    }
                ),
                "rest": self.rest.model_copy(update={"tls": self.rest.tls.resolved(fix) if self.rest.tls else None}),
            }
        )

    @property
    def sqlite_path(self) -> Path:
        return self.persistence.sqlite_path or self.data_dir / "hub.sqlite"

    @property
    def history_path(self) -> Path:
        return self.history.sqlite_path or self.data_dir / "history.sqlite"

    @property
    def alarms_path(self) -> Path:
        return self.analytics.sqlite_path or self.data_dir / "alarms.sqlite"

    @property
    def predictive_path(self) -> Path:
        return self.analytics.predictive.sqlite_path or self.data_dir / "predictive.sqlite"

    @property
    def audit_log_path(self) -> Path:
        return self.security.audit_log or self.data_dir / "audit.log"


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
    except UnicodeDecodeError as error:
        raise ConfigurationError(f"not UTF-8 text (byte {error.start} cannot be decoded)", str(path)) from None
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


def secret_from_environment(value: str | None, env_name: str | None, location: str) -> str | None:
    """A configured secret: ``value`` itself, or the one in the environment variable ``env_name``.

    ``ConfigurationError`` naming ``location`` when the variable is not set.
    """
    if env_name is None:
        return value
    from_environment = os.environ.get(env_name)
    if from_environment is None:
        raise ConfigurationError(f"environment variable {env_name!r} (password_env) is not set", location)
    return from_environment
