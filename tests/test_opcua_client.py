"""The OPC UA client connector against a real asyncua server on loopback playing a legacy boiler controller."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.common.callback import CallbackType
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from aas_server.connectors.opcua_client import (
    CLIENT_CERTIFICATE_FILE,
    OpcUaClientConnector,
    parse_browse_path,
    to_variant,
)
from aas_server.errors import (
    ConfigurationError,
    DeviceError,
    MappingError,
    NotWritableError,
    TypeMismatchError,
)
from aas_server.mapping.schema import (
    Access,
    Acquisition,
    OpcUaDevice,
    OpcUaMethodPoint,
    OpcUaVariablePoint,
    ReconnectBackoff,
    Target,
)
from aas_server.model.events import Quality, QualityReason, RawSample, RawWrite
from aas_server.opcua_common.status import quality_of_status
from tests.support import wait_until

on_module_loop = pytest.mark.asyncio(loop_scope="module")
"""The async tests share the module's event loop, and so the one legacy server."""

NAMESPACE = "urn:aas-server:tests:legacy-boiler"
SERVER_URI = "urn:aas-server:tests:legacy-boiler-server"
USER, PASSWORD = "operator", "boiler-secret"
SUBMODEL = "urn:aas-server:tests:sm:boiler"
CONNECTOR_LOGGER = "aas_server.connectors.opcua_client"
SOURCE_TIME = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)


def _retries(caplog: pytest.LogCaptureFixture) -> int:
    """Connection attempts that failed while the device was already known to be unreachable."""
    return sum("still unreachable" in record.getMessage() for record in caplog.records)


def _outage_reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == CONNECTOR_LOGGER
        and record.levelno >= logging.WARNING
        and "unreachable" in record.getMessage()
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Users(UserManager):
    """Anonymous sessions and one user with one password; anything else is refused.

    Remembers the client certificate of each session's secure channel (``None`` without one).
    """

    def __init__(self) -> None:
        self.certificates: list[bytes | None] = []

    def get_user(
        self, iserver: InternalServer, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        self.certificates.append(certificate)
        if username is None or (username == USER and password == PASSWORD):
            return User(role=UserRole.User, name=username)
        return None


def _server_certificate(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    private_key = cert_gen.generate_private_key()
    certificate = cert_gen.generate_self_signed_app_certificate(
        private_key,
        "legacy boiler",
        {},
        [x509.UniformResourceIdentifier(SERVER_URI), x509.DNSName("localhost"), x509.DNSName(socket.gethostname())],
        extended=[ExtendedKeyUsageOID.SERVER_AUTH],
    )
    paths = (folder / "server.der", folder / "server_key.pem")
    paths[0].write_bytes(certificate.public_bytes(Encoding.DER))
    paths[1].write_bytes(cert_gen.dump_private_key_as_pem(private_key))
    return paths


class LegacyBoiler:
    """An asyncua server with a ``Boiler`` object: the device the connector talks to.

    ``Boiler`` holds Temperature (Double), Pressure (Float), Level (Double), Setpoint (Int16,
    writable), Serial (String, read-only) and the method ``Scale(value: Double, factor: Int16) ->
    (product: Double, text: String)``, which fails with ``BadInvalidState`` for factor 0.
    """

    def __init__(self, port: int, certificate: tuple[Path, Path]) -> None:
        self.port = port
        self.url = f"opc.tcp://127.0.0.1:{port}/"
        self._certificate = certificate
        self._server: Server | None = None
        self.namespace_index = 0
        self.factor_types: list[ua.VariantType] = []
        self.users = _Users()
        self.reads: list[list[ua.ReadValueId]] = []
        """What each client Read request asked for."""
        self.monitored: list[ua.MonitoredItemCreateRequest] = []
        """Every monitored item clients asked for."""

    @property
    def server(self) -> Server:
        assert self._server is not None
        return self._server

    async def start(self) -> None:
        server = Server(user_manager=self.users)
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("legacy boiler")
        await server.set_application_uri(SERVER_URI)
        await server.load_certificate(self._certificate[0])
        await server.load_private_key(self._certificate[1])
        server.set_security_policy(
            [ua.SecurityPolicyType.NoSecurity, ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
        )
        server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken])
        index = await server.register_namespace(NAMESPACE)
        self.namespace_index = index
        boiler = await server.nodes.objects.add_object(f"ns={index};s=Boiler", ua.QualifiedName("Boiler", index))
        variables = [
            ("Temperature", 21.5, ua.VariantType.Double),
            ("Pressure", 1.5, ua.VariantType.Float),
            ("Level", 0.75, ua.VariantType.Double),
            ("Setpoint", 60, ua.VariantType.Int16),
            ("Serial", "SN-0001", ua.VariantType.String),
        ]
        for name, value, variant_type in variables:
            node = await boiler.add_variable(
                f"ns={index};s=Boiler.{name}", ua.QualifiedName(name, index), ua.Variant(value, variant_type)
            )
            if name == "Setpoint":
                await node.set_writable()
        await boiler.add_method(
            f"ns={index};s=Boiler.Scale",
            ua.QualifiedName("Scale", index),
            self._scale,
            [ua.VariantType.Double, ua.VariantType.Int16],
            [ua.VariantType.Double, ua.VariantType.String],
        )
        server.subscribe_server_callback(CallbackType.PreRead, self._on_read)
        server.subscribe_server_callback(CallbackType.ItemSubscriptionCreated, self._on_monitored_items)
        await server.start()
        self._server = server

    def _on_read(self, event: Any, dispatcher: Any) -> None:
        if event.is_external:
            self.reads.append(list(event.request_params.NodesToRead))

    def _on_monitored_items(self, event: Any, dispatcher: Any) -> None:
        self.monitored.extend(event.request_params.ItemsToCreate)

    async def _scale(
        self, parent: ua.NodeId, value: ua.Variant, factor: ua.Variant
    ) -> list[ua.Variant] | ua.StatusCode:
        self.factor_types.append(factor.VariantType)
        if factor.Value == 0:
            return ua.StatusCode(cast(Any, ua.StatusCodes.BadInvalidState))
        product = value.Value * factor.Value
        return [ua.Variant(product, ua.VariantType.Double), ua.Variant(f"{product:g}", ua.VariantType.String)]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    def node_id(self, name: str) -> ua.NodeId:
        return ua.NodeId.from_string(f"ns={self.namespace_index};s=Boiler.{name}")

    async def set(
        self, name: str, value: ua.Variant, *, status: int = ua.StatusCodes.Good, source_time: datetime | None = None
    ) -> None:
        """Change a variable as the controller itself would (its source timestamp: ``source_time`` or now)."""
        data_value = ua.DataValue(
            value,
            StatusCode=ua.StatusCode(cast(Any, status)),
            SourceTimestamp=cast(Any, source_time or datetime.now(UTC)),
        )
        await self.server.write_attribute_value(self.node_id(name), data_value)

    async def read(self, name: str) -> ua.Variant:
        data_value = await self.server.get_node(self.node_id(name)).read_data_value()
        assert data_value.Value is not None
        return data_value.Value


@pytest.fixture(scope="module")
def server_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _server_certificate(tmp_path_factory.mktemp("boiler-pki"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def boiler(server_certificate: tuple[Path, Path]) -> AsyncIterator[LegacyBoiler]:
    """One legacy server for the module: asyncua takes about a second and a half to start."""
    device = LegacyBoiler(_free_port(), server_certificate)
    await device.start()
    try:
        yield device
    finally:
        await device.stop()


class Samples:
    """The sink: every sample the connector emitted, in order."""

    def __init__(self) -> None:
        self.items: list[RawSample] = []

    def __call__(self, sample: RawSample) -> None:
        self.items.append(sample)

    def of(self, point: str) -> list[RawSample]:
        return [sample for sample in self.items if sample.point == point]

    async def next(
        self, point: str, check: Callable[[RawSample], bool] = lambda _: True, *, after: int = 0, within: float = 5.0
    ) -> RawSample:
        """The first sample of ``point`` from index ``after`` on that passes ``check``."""

        def found() -> RawSample | None:
            return next((s for s in self.items[after:] if s.point == point and check(s)), None)

        await wait_until(lambda: found() is not None, within=within, what=f"a matching sample of {point!r}")
        sample = found()
        assert sample is not None
        return sample


def _device(url: str, **changes: Any) -> OpcUaDevice:
    settings: dict[str, Any] = {
        "name": "boiler",
        "protocol": "opcua",
        "endpoint": url,
        "timeout": 2.0,
        "publishing_interval": 0.05,
        "reconnect_backoff": ReconnectBackoff(initial=0.1, maximum=0.4),
    }
    settings.update(changes)
    return OpcUaDevice.model_validate(settings)


def _variable(name: str, element: str, **address: Any) -> OpcUaVariablePoint:
    return OpcUaVariablePoint.model_validate(
        {"name": name, "device": "boiler", "target": Target(submodel=SUBMODEL, path=element), **address}
    )


def _method(name: str, **address: Any) -> OpcUaMethodPoint:
    return OpcUaMethodPoint.model_validate(
        {"name": name, "device": "boiler", "target": Target(submodel=SUBMODEL, path=name.split(".")[-1]), **address}
    )


def _connector(
    device: OpcUaDevice,
    points: Sequence[OpcUaVariablePoint | OpcUaMethodPoint],
    samples: Samples,
    pki_dir: Path | None = None,
) -> OpcUaClientConnector:
    return OpcUaClientConnector(device, points, samples, pki_dir=pki_dir)


# --- pure parts ---------------------------------------------------------------------------------------


def test_status_codes_map_to_quality_and_reason() -> None:
    table = {
        ua.StatusCodes.Good: (Quality.GOOD, QualityReason.NONE),
        ua.StatusCodes.GoodClamped: (Quality.GOOD, QualityReason.NONE),
        ua.StatusCodes.UncertainLastUsableValue: (Quality.UNCERTAIN, QualityReason.LAST_USABLE),
        ua.StatusCodes.UncertainEngineeringUnitsExceeded: (Quality.UNCERTAIN, QualityReason.OUT_OF_RANGE),
        ua.StatusCodes.Uncertain: (Quality.UNCERTAIN, QualityReason.LAST_USABLE),
        ua.StatusCodes.BadNoCommunication: (Quality.BAD, QualityReason.NO_COMMUNICATION),
        ua.StatusCodes.BadSensorFailure: (Quality.BAD, QualityReason.SENSOR_FAILURE),
        ua.StatusCodes.BadOutOfRange: (Quality.BAD, QualityReason.OUT_OF_RANGE),
        ua.StatusCodes.BadWaitingForInitialData: (Quality.BAD, QualityReason.NOT_YET_READ),
        ua.StatusCodes.BadNodeIdUnknown: (Quality.BAD, QualityReason.COMMUNICATION_ERROR),
        ua.StatusCodes.BadSensorFailure | 0x0400: (Quality.BAD, QualityReason.SENSOR_FAILURE),
    }
    assert {code: quality_of_status(code) for code in table} == table


def test_values_are_typed_and_range_checked_before_they_are_written() -> None:
    assert to_variant(42, ua.VariantType.Int16) == ua.Variant(42, ua.VariantType.Int16)
    assert to_variant(45.0, ua.VariantType.Byte) == ua.Variant(45, ua.VariantType.Byte)
    assert to_variant(3, ua.VariantType.Float) == ua.Variant(3.0, ua.VariantType.Float)
    assert to_variant([1, 2], ua.VariantType.UInt32) == ua.Variant([1, 2], ua.VariantType.UInt32, is_array=True)
    assert to_variant(7, ua.VariantType.Variant) == ua.Variant(7, ua.VariantType.Int32)
    assert to_variant("on", None) == ua.Variant("on", ua.VariantType.String)
    refusals: list[tuple[Any, ua.VariantType, str]] = [
        (40000, ua.VariantType.Int16, "out of range for Int16"),
        (-1, ua.VariantType.UInt16, "out of range for UInt16"),
        (2.5, ua.VariantType.Int32, "would be truncated"),
        (True, ua.VariantType.Int32, "boolean"),
        ("7", ua.VariantType.Double, "not a number"),
        (1e39, ua.VariantType.Float, "out of range for Float"),
        (2, ua.VariantType.Boolean, "not a Boolean"),
    ]
    for value, variant_type, message in refusals:
        with pytest.raises(TypeMismatchError, match=message):
            to_variant(value, variant_type)


def test_browse_paths_and_addresses_are_checked_when_the_connector_is_made() -> None:
    assert parse_browse_path("2:Boiler/2:Temperature") == [
        ua.QualifiedName("Boiler", 2),
        ua.QualifiedName("Temperature", 2),
    ]
    assert parse_browse_path("Server/3:Vendor:Info") == [
        ua.QualifiedName("Server", 0),
        ua.QualifiedName("Vendor:Info", 3),
    ]
    device = _device("opc.tcp://127.0.0.1:4840/")
    with pytest.raises(MappingError, match="not a NodeId"):
        _connector(device, [_variable("boiler.bad", "Bad", node_id="ns=2;x=what")], Samples())
    with pytest.raises(MappingError, match="empty element"):
        _connector(device, [_variable("boiler.bad", "Bad", browse_path="2:Boiler//2:Level")], Samples())
    secure = _device("opc.tcp://127.0.0.1:4840/", security_policy="Basic256Sha256", security_mode="sign-and-encrypt")
    with pytest.raises(ConfigurationError, match="needs a client certificate"):
        _connector(secure, [], Samples())
    with pytest.raises(ConfigurationError, match="BOILER_PASSWORD_UNSET"):
        _connector(_device(device.endpoint, username=USER, password_env="BOILER_PASSWORD_UNSET"), [], Samples())


# --- against the legacy server ------------------------------------------------------------------------


@on_module_loop
async def test_subscribed_changes_arrive_with_source_timestamp_and_quality(boiler: LegacyBoiler) -> None:
    samples = Samples()
    points = [
        _variable(
            "boiler.temperature",
            "Temperature",
            node_id=f"nsu={NAMESPACE};s=Boiler.Temperature",
            sampling_interval=0.25,
        ),
        _variable("boiler.level", "Level", node_id=f"ns={boiler.namespace_index};s=Boiler.Level"),
    ]
    async with _connector(_device(boiler.url), points, samples) as connector:
        first = await samples.next("boiler.temperature")
        assert (first.raw, first.quality) == (21.5, Quality.GOOD)
        assert connector.connected
        await samples.next("boiler.level", lambda s: s.raw == 0.75)
        sampling = {
            item.ItemToMonitor.NodeId: item.RequestedParameters.SamplingInterval for item in boiler.monitored[-2:]
        }
        assert sampling == {boiler.node_id("Temperature"): 250.0, boiler.node_id("Level"): 100.0}

        mark = len(samples.items)
        await boiler.set("Temperature", ua.Variant(22.25, ua.VariantType.Double), source_time=SOURCE_TIME)
        changed = await samples.next("boiler.temperature", lambda s: s.raw == 22.25, after=mark)
        assert changed.source_time == SOURCE_TIME
        assert changed.quality is Quality.GOOD
        assert changed.source == "boiler"

        mark = len(samples.items)
        await boiler.set(
            "Temperature", ua.Variant(22.5, ua.VariantType.Double), status=ua.StatusCodes.UncertainLastUsableValue
        )
        uncertain = await samples.next("boiler.temperature", after=mark)
        assert (uncertain.raw, uncertain.quality, uncertain.reason) == (
            22.5,
            Quality.UNCERTAIN,
            QualityReason.LAST_USABLE,
        )

        mark = len(samples.items)
        await boiler.set("Temperature", ua.Variant(22.5, ua.VariantType.Double), status=ua.StatusCodes.BadSensorFailure)
        bad = await samples.next("boiler.temperature", after=mark)
        assert (bad.raw, bad.quality, bad.reason) == (None, Quality.BAD, QualityReason.SENSOR_FAILURE)
    await boiler.set("Temperature", ua.Variant(21.5, ua.VariantType.Double))


@on_module_loop
async def test_polled_points_are_read_at_their_interval(boiler: LegacyBoiler) -> None:
    samples = Samples()
    points = [
        _variable(
            "boiler.pressure", "Pressure", node_id=f"ns={boiler.namespace_index};s=Boiler.Pressure", poll_interval=0.05
        ),
        _variable(
            "boiler.serial", "Serial", node_id=f"ns={boiler.namespace_index};s=Boiler.Serial", poll_interval=0.05
        ),
    ]
    device = _device(boiler.url, acquisition=Acquisition.POLL)
    async with _connector(device, points, samples):
        assert (await samples.next("boiler.serial")).raw == "SN-0001"
        assert (await samples.next("boiler.pressure")).raw == 1.5
        mark = len(samples.items)
        await boiler.set("Pressure", ua.Variant(2.25, ua.VariantType.Float), source_time=SOURCE_TIME)
        polled = await samples.next("boiler.pressure", lambda s: s.raw == 2.25, after=mark)
        assert (polled.quality, polled.source_time) == (Quality.GOOD, SOURCE_TIME)
        assert len(samples.of("boiler.serial")) >= 2, "polled again and again"
    together = {boiler.node_id("Pressure"), boiler.node_id("Serial")}
    assert any({item.NodeId for item in request} == together for request in boiler.reads), "one Read for both"
    await boiler.set("Pressure", ua.Variant(1.5, ua.VariantType.Float))


@on_module_loop
async def test_browse_paths_resolve_and_an_unknown_one_spoils_only_its_point(
    boiler: LegacyBoiler, caplog: pytest.LogCaptureFixture
) -> None:
    samples = Samples()
    ns = boiler.namespace_index
    points = [
        _variable("boiler.temperature", "Temperature", browse_path=f"{ns}:Boiler/{ns}:Temperature"),
        _variable("boiler.missing", "Missing", browse_path=f"{ns}:Boiler/{ns}:Missing"),
        _variable(
            "boiler.level", "Level", browse_path=f"{ns}:Boiler/{ns}:Level", acquisition="poll", poll_interval=0.05
        ),
    ]
    with caplog.at_level(logging.WARNING, logger=CONNECTOR_LOGGER):
        async with _connector(_device(boiler.url), points, samples):
            missing = await samples.next("boiler.missing")
            assert (missing.raw, missing.quality, missing.reason) == (
                None,
                Quality.BAD,
                QualityReason.COMMUNICATION_ERROR,
            )
            assert (await samples.next("boiler.temperature")).raw == 21.5
            assert (await samples.next("boiler.level")).raw == 0.75
            mark = len(samples.items)
            await boiler.set("Temperature", ua.Variant(23.0, ua.VariantType.Double))
            await samples.next("boiler.temperature", lambda s: s.raw == 23.0, after=mark)
    await boiler.set("Temperature", ua.Variant(21.5, ua.VariantType.Double))
    named = [record.getMessage() for record in caplog.records if f"{ns}:Boiler/{ns}:Missing" in record.getMessage()]
    assert len(named) == 1, named
    assert "boiler.missing" in named[0]
    assert "BadNoMatch" in named[0]


@on_module_loop
async def test_writes_arrive_typed_as_the_variables_data_type(boiler: LegacyBoiler) -> None:
    setpoint = _variable(
        "boiler.setpoint", "Setpoint", node_id=f"ns={boiler.namespace_index};s=Boiler.Setpoint", access="read-write"
    )
    async with _connector(_device(boiler.url), [setpoint], Samples()) as connector:
        await connector.write(RawWrite("boiler", "boiler.setpoint", 42))
        written = await boiler.read("Setpoint")
        assert (written.Value, written.VariantType) == (42, ua.VariantType.Int16)

        await connector.write(RawWrite("boiler", "boiler.setpoint", 45.0))
        assert (await boiler.read("Setpoint")).Value == 45

        with pytest.raises(TypeMismatchError, match=r"boiler\.setpoint.*out of range for Int16"):
            await connector.write(RawWrite("boiler", "boiler.setpoint", 40000))
        with pytest.raises(TypeMismatchError, match="would be truncated"):
            await connector.write(RawWrite("boiler", "boiler.setpoint", 2.5))
        assert (await boiler.read("Setpoint")).Value == 45
    await boiler.set("Setpoint", ua.Variant(60, ua.VariantType.Int16))


@on_module_loop
async def test_writes_to_a_read_only_variable_are_refused(boiler: LegacyBoiler) -> None:
    ns = boiler.namespace_index
    points = [
        _variable("boiler.serial", "Serial", node_id=f"ns={ns};s=Boiler.Serial", access=Access.READ_WRITE),
        _variable("boiler.level", "Level", node_id=f"ns={ns};s=Boiler.Level"),
    ]
    async with _connector(_device(boiler.url), points, Samples()) as connector:
        # asyncua answers BadUserAccessDenied where other servers say BadNotWritable; both are NotWritableError.
        with pytest.raises(
            NotWritableError, match=r"refused the write of 'boiler\.serial': Bad(NotWritable|UserAccess)"
        ):
            await connector.write(RawWrite("boiler", "boiler.serial", "SN-9999"))
        with pytest.raises(NotWritableError, match="read-only"):
            await connector.write(RawWrite("boiler", "boiler.level", 0.5))
    assert (await boiler.read("Serial")).Value == "SN-0001"
    assert (await boiler.read("Level")).Value == 0.75


@on_module_loop
async def test_methods_are_called_with_typed_inputs_and_return_their_outputs(boiler: LegacyBoiler) -> None:
    ns = boiler.namespace_index
    points = [
        _method("boiler.scale", object_node_id=f"ns={ns};s=Boiler", method_node_id=f"ns={ns};s=Boiler.Scale"),
        _method("boiler.scale_by_path", object_browse_path=f"{ns}:Boiler", method_browse_name=f"{ns}:Scale"),
    ]
    async with _connector(_device(boiler.url), points, Samples()) as connector:
        assert await connector.call("boiler.scale", [2.5, 3]) == [7.5, "7.5"]
        assert boiler.factor_types[-1] is ua.VariantType.Int16
        assert await connector.call("boiler.scale_by_path", [1.5, 2.0]) == [3.0, "3"]
        with pytest.raises(DeviceError, match="BadInvalidState"):
            await connector.call("boiler.scale", [1.0, 0])
        with pytest.raises(TypeMismatchError, match="takes 2 input arguments, got 1"):
            await connector.call("boiler.scale", [1.0])
        with pytest.raises(TypeMismatchError, match=r"input argument 1.*out of range for Int16"):
            await connector.call("boiler.scale", [1.0, 70000])


@on_module_loop
async def test_user_credentials_open_a_session_and_a_wrong_password_is_reported(
    boiler: LegacyBoiler, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BOILER_PASSWORD", PASSWORD)
    point = _variable(
        "boiler.setpoint", "Setpoint", node_id=f"nsu={NAMESPACE};s=Boiler.Setpoint", access=Access.READ_WRITE
    )
    samples = Samples()
    device = _device(boiler.url, username=USER, password_env="BOILER_PASSWORD")
    async with _connector(device, [point], samples) as connector:
        assert (await samples.next("boiler.setpoint")).raw == 60
        assert connector.connected
        await connector.write(RawWrite("boiler", "boiler.setpoint", 61))
    assert (await boiler.read("Setpoint")).Value == 61
    await boiler.set("Setpoint", ua.Variant(60, ua.VariantType.Int16))

    refused = Samples()
    wrong = _device(boiler.url, username=USER, password="guessed")
    with caplog.at_level(logging.DEBUG, logger=CONNECTOR_LOGGER):
        async with _connector(wrong, [point], refused) as connector:
            await wait_until(lambda: _retries(caplog) >= 2, within=5.0, what="two more connection attempts")
            bad = await refused.next("boiler.setpoint")
            assert (bad.quality, bad.reason) == (Quality.BAD, QualityReason.NO_COMMUNICATION)
            assert not connector.connected
            with pytest.raises(DeviceError, match=r"rejected user 'operator' \(BadUserAccessDenied\)"):
                await connector.write(RawWrite("boiler", "boiler.setpoint", 1))
    assert [s.quality for s in refused.items] == [Quality.BAD]
    warnings = _outage_reports(caplog)
    assert len(warnings) == 1, warnings
    assert "rejected user 'operator' (BadUserAccessDenied)" in warnings[0]


@on_module_loop
async def test_a_secured_endpoint_is_used_with_a_generated_client_certificate(
    boiler: LegacyBoiler, tmp_path: Path
) -> None:
    pki_dir = tmp_path / "pki"
    device = _device(
        boiler.url,
        security_policy="Basic256Sha256",
        security_mode="sign-and-encrypt",
        username=USER,
        password=PASSWORD,
    )
    point = _variable("boiler.temperature", "Temperature", node_id=f"nsu={NAMESPACE};s=Boiler.Temperature")
    samples = Samples()
    async with _connector(device, [point], samples, pki_dir) as connector:
        assert (await samples.next("boiler.temperature")).raw == 21.5
        assert connector.connected
    certificate = (pki_dir / CLIENT_CERTIFICATE_FILE).read_bytes()
    assert boiler.users.certificates[-1] == certificate, "the session ran on a channel secured with it"

    again = Samples()
    async with _connector(device, [point], again, pki_dir):
        assert (await again.next("boiler.temperature")).quality is Quality.GOOD
    assert (pki_dir / CLIENT_CERTIFICATE_FILE).read_bytes() == certificate, "generated once and reused"


@on_module_loop
async def test_an_unreachable_server_makes_points_bad_once_and_does_not_fail_the_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    samples = Samples()
    url = f"opc.tcp://127.0.0.1:{_free_port()}/"
    points = [
        _variable("boiler.temperature", "Temperature", node_id="ns=2;s=Boiler.Temperature", access="read-write"),
        _variable("boiler.level", "Level", node_id="ns=2;s=Boiler.Level", acquisition="poll", poll_interval=0.02),
    ]
    with caplog.at_level(logging.DEBUG, logger=CONNECTOR_LOGGER):
        async with _connector(_device(url), points, samples) as connector:
            await wait_until(lambda: _retries(caplog) >= 2, within=5.0, what="two more connection attempts")
            assert not connector.connected
            with pytest.raises(DeviceError, match="not connected"):
                await connector.write(RawWrite("boiler", "boiler.temperature", 1.0))
    assert [(s.point, s.quality, s.reason) for s in samples.items] == [
        ("boiler.temperature", Quality.BAD, QualityReason.NO_COMMUNICATION),
        ("boiler.level", Quality.BAD, QualityReason.NO_COMMUNICATION),
    ]
    warnings = _outage_reports(caplog)
    assert len(warnings) == 1, warnings


@on_module_loop
async def test_a_restarted_server_is_subscribed_again(
    server_certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    port = _free_port()
    first = LegacyBoiler(port, server_certificate)
    await first.start()
    samples = Samples()
    ns = first.namespace_index
    points = [
        _variable("boiler.temperature", "Temperature", node_id=f"ns={ns};s=Boiler.Temperature"),
        _variable("boiler.pressure", "Pressure", node_id=f"ns={ns};s=Boiler.Pressure", acquisition="poll"),
    ]
    second = LegacyBoiler(port, server_certificate)
    try:
        with caplog.at_level(logging.INFO, logger=CONNECTOR_LOGGER):
            async with _connector(_device(first.url), points, samples) as connector:
                await samples.next("boiler.temperature", lambda s: s.quality is Quality.GOOD)
                await samples.next("boiler.pressure", lambda s: s.quality is Quality.GOOD)

                mark = len(samples.items)
                await first.stop()
                for name in ("boiler.temperature", "boiler.pressure"):
                    lost = await samples.next(name, after=mark)
                    assert (lost.raw, lost.quality, lost.reason) == (None, Quality.BAD, QualityReason.NO_COMMUNICATION)
                assert not connector.connected

                await second.start()
                await wait_until(lambda: connector.connected, within=5.0, what="the connector to reconnect")
                await second.set("Temperature", ua.Variant(30.5, ua.VariantType.Double), source_time=SOURCE_TIME)
                back = await samples.next("boiler.temperature", lambda s: s.raw == 30.5, after=mark)
                assert (back.quality, back.source_time) == (Quality.GOOD, SOURCE_TIME)
                await samples.next("boiler.pressure", lambda s: s.quality is Quality.GOOD, after=mark)
        outage = samples.items[mark:]
        for name in ("boiler.temperature", "boiler.pressure"):
            assert [s.quality for s in outage if s.point == name and s.quality is Quality.BAD] == [Quality.BAD]
        messages = [r.getMessage() for r in caplog.records]
        assert sum("is unreachable" in message for message in messages) == 1, messages
        assert sum("reachable again" in message for message in messages) == 1, messages
    finally:
        await first.stop()
        await second.stop()
