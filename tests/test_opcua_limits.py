"""OPC UA resource limits: one client cannot make the hub do unbounded work or take what other clients need.

asyncua advertises 10,000 for every ``OperationLimits`` entry but served requests of any size, let
one session hold all 1,000 subscriptions of the server, and took 100 MiB messages. The hub enforces
the advertised operation limits (``BadTooManyOperations``), a number of subscriptions per session
(``BadTooManySubscriptions``) and monitored items per session (``BadTooManyMonitoredItems``), a number
of connections per client address, a 16 MiB message size,
and publishing intervals from 10 ms to an hour.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import urlparse

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.server.internal_session import InternalSession
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import uatcp_to_binary
from asyncua.ua.uaerrors import UaStatusCodeError
from basyx.aas import model
from pydantic import SecretStr

from aas_server.config import OpcUaSettings, Role, UserSettings
from aas_server.opcua import OpcUaProjection, node_id_for, processor
from aas_server.opcua.processor import (
    MAX_CONNECTIONS_PER_ADDRESS,
    MAX_MESSAGE_SIZE,
    MAX_OPERATIONS_PER_REQUEST,
    MAX_PUBLISHING_INTERVAL,
    MAX_SUBSCRIPTIONS_PER_SESSION,
    MIN_PUBLISHING_INTERVAL,
)
from aas_server.store.twin_store import TwinStore
from tests.support import CLIENT_URI, ClientCertificate, eventually, trust_client_certificate, value_of

pytestmark = pytest.mark.asyncio(loop_scope="module")

SUBMODEL_ID = "urn:aas-server:tests:sm:limits"
OPERATOR = UserSettings(name="olga", password=SecretStr("operator-secret"), role=Role.OPERATOR)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def projection(
    tmp_path_factory: pytest.TempPathFactory, opcua_client_certificate: ClientCertificate
) -> AsyncIterator[OpcUaProjection]:
    data_dir = tmp_path_factory.mktemp("hub-limits")
    trust_client_certificate(data_dir, opcua_client_certificate)
    store = TwinStore()
    store.add(
        model.Submodel(
            SUBMODEL_ID,
            id_short="Limits",
            submodel_element=[model.Property("Level", float, 4.5), model.Property("Batch", str, "B-1")],
        )
    )
    settings = OpcUaSettings(port=0, users=[OPERATOR], allow_anonymous_read=True)
    async with OpcUaProjection(store, settings, data_dir) as running:
        yield running


@asynccontextmanager
async def _session(
    projection: OpcUaProjection, certificate: ClientCertificate, user: UserSettings | None
) -> AsyncIterator[Client]:
    client = Client(projection.endpoint_url, timeout=10)
    client.application_uri = CLIENT_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(certificate.certificate),
        str(certificate.private_key),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    if user is not None:
        client.set_user(user.name)
        client.set_password(user.password.get_secret_value())
    async with client:
        yield client


def _node(projection: OpcUaProjection, id_short: str) -> ua.NodeId:
    return ua.NodeId(cast(Any, node_id_for(SUBMODEL_ID, id_short)), cast(Any, projection.namespace_index))


async def test_requests_over_the_advertised_operation_limits_are_refused(
    projection: OpcUaProjection, opcua_client_certificate: ClientCertificate
) -> None:
    level = _node(projection, "Level")
    async with _session(projection, opcua_client_certificate, OPERATOR) as client:
        advertised = await client.get_node(
            ua.NodeId(cast(Any, ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead))
        ).read_value()
        assert advertised == MAX_OPERATIONS_PER_REQUEST
        read = ua.ReadValueId(NodeId=level, AttributeId=ua.AttributeIds.Value)
        values = await client.uaclient.read(ua.ReadParameters(NodesToRead=[read] * MAX_OPERATIONS_PER_REQUEST))
        assert len(values) == MAX_OPERATIONS_PER_REQUEST
        assert {value_of(value) for value in values} == {4.5}
        with pytest.raises(UaStatusCodeError) as too_many_reads:
            await client.uaclient.read(ua.ReadParameters(NodesToRead=[read] * (MAX_OPERATIONS_PER_REQUEST + 1)))
        assert too_many_reads.value.code == StatusCodes.BadTooManyOperations
        write = ua.WriteValue(
            NodeId=level,
            AttributeId=ua.AttributeIds.Value,
            Value=ua.DataValue(ua.Variant(9.0, ua.VariantType.Double)),
        )
        with pytest.raises(UaStatusCodeError) as too_many_writes:
            await client.uaclient.write(ua.WriteParameters(NodesToWrite=[write] * (MAX_OPERATIONS_PER_REQUEST + 1)))
        assert too_many_writes.value.code == StatusCodes.BadTooManyOperations
        assert await client.get_node(level).read_value() == 4.5
        with pytest.raises(UaStatusCodeError) as too_many_registrations:
            await client.uaclient.register_nodes([level] * (MAX_OPERATIONS_PER_REQUEST + 1))
        assert too_many_registrations.value.code == StatusCodes.BadTooManyOperations


async def test_one_session_cannot_take_every_subscription_of_the_server(
    projection: OpcUaProjection, opcua_client_certificate: ClientCertificate
) -> None:
    async with _session(projection, opcua_client_certificate, None) as greedy:
        for _ in range(MAX_SUBSCRIPTIONS_PER_SESSION):
            await greedy.create_subscription(1000, None)
        with pytest.raises(UaStatusCodeError) as refused:
            await greedy.create_subscription(1000, None)
        assert refused.value.code == StatusCodes.BadTooManySubscriptions
        async with _session(projection, opcua_client_certificate, OPERATOR) as operator:
            subscription = await operator.create_subscription(100, None)
            handle = await subscription.subscribe_data_change(operator.get_node(_node(projection, "Level")))
            assert handle
            await subscription.delete()


async def test_a_message_over_the_size_limit_is_refused_and_changes_nothing(
    projection: OpcUaProjection, opcua_client_certificate: ClientCertificate
) -> None:
    batch = _node(projection, "Batch")
    async with _session(projection, opcua_client_certificate, OPERATOR) as client:
        huge = ua.WriteValue(
            NodeId=batch,
            AttributeId=ua.AttributeIds.Value,
            Value=ua.DataValue(ua.Variant("x" * (MAX_MESSAGE_SIZE + 1024), ua.VariantType.String)),
        )
        with pytest.raises((UaStatusCodeError, ConnectionError, TimeoutError)):
            await client.uaclient.write(ua.WriteParameters(NodesToWrite=[huge]))
    async with _session(projection, opcua_client_certificate, OPERATOR) as client:
        assert await client.get_node(batch).read_value() == "B-1"
        await client.get_node(batch).write_value(ua.DataValue(ua.Variant("B-2", ua.VariantType.String)))
        await eventually(client.get_node(batch).read_value, lambda value: value == "B-2")


async def _hello(projection: OpcUaProjection, source: str) -> tuple[asyncio.StreamWriter, bytes]:
    """A TCP connection from ``source`` that sent Hello; the first bytes answered (``b"ACK"``, or ``b""`` if closed)."""
    address = urlparse(projection.endpoint_url)
    assert address.hostname is not None
    reader, writer = await asyncio.open_connection(address.hostname, address.port, local_addr=(source, 0))
    hello = ua.Hello(EndpointUrl=cast(Any, projection.endpoint_url))
    writer.write(uatcp_to_binary(cast(Any, ua.MessageType.Hello), hello))
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(3), 5)
    except ConnectionResetError:
        answer = b""
    return writer, answer


async def test_one_address_cannot_take_every_connection_of_the_server(projection: OpcUaProjection) -> None:
    """Channels that never open a session (anybody may open one) from one host stop at a per-address cap."""
    flood: list[asyncio.StreamWriter] = []
    try:
        for _ in range(MAX_CONNECTIONS_PER_ADDRESS):
            writer, answer = await _hello(projection, "127.0.0.1")
            flood.append(writer)
            assert answer == b"ACK"
        writer, answer = await _hello(projection, "127.0.0.1")
        flood.append(writer)
        assert answer == b""
        writer, answer = await _hello(projection, "127.0.0.2")
        flood.append(writer)
        assert answer == b"ACK"
    finally:
        for writer in flood:
            writer.close()
    for writer in flood:
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def fresh_connection() -> bytes:
        writer, answer = await _hello(projection, "127.0.0.1")
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        return answer

    await eventually(fresh_connection, lambda answer: answer == b"ACK", within=5.0)


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        (0.001, MIN_PUBLISHING_INTERVAL),
        (0.0, MIN_PUBLISHING_INTERVAL),
        (-5.0, MIN_PUBLISHING_INTERVAL),
        (float("nan"), MIN_PUBLISHING_INTERVAL),
        (float("inf"), MAX_PUBLISHING_INTERVAL),
        (250.0, 250.0),
    ],
    ids=["microsecond", "zero", "negative", "nan", "infinite", "ordinary"],
)
async def test_publishing_intervals_are_revised_into_the_granted_range(
    projection: OpcUaProjection, opcua_client_certificate: ClientCertificate, requested: float, granted: float
) -> None:
    """A 0.001 ms publishing interval would be a busy loop on the hub's event loop; it is revised, as OPC UA allows."""
    async with _session(projection, opcua_client_certificate, None) as client:
        parameters = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=cast(Any, requested),
            RequestedLifetimeCount=cast(Any, 600),
            RequestedMaxKeepAliveCount=cast(Any, 20),
            PublishingEnabled=True,
        )
        result = await client.uaclient.create_subscription(parameters, lambda _: None)
        assert result.RevisedPublishingInterval == granted
        await client.uaclient.delete_subscriptions([result.SubscriptionId])


async def test_a_session_cannot_monitor_without_bound(
    projection: OpcUaProjection, opcua_client_certificate: ClientCertificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Monitored items are capped per session over all its subscriptions (lowered here to keep the test short)."""
    monkeypatch.setattr(processor, "MAX_MONITORED_ITEMS_PER_SESSION", 25)
    level = _node(projection, "Level")
    async with _session(projection, opcua_client_certificate, None) as client:
        first = await client.create_subscription(1000, None)
        second = await client.create_subscription(1000, None)
        handles = await first.subscribe_data_change([client.get_node(level)] * 20)
        assert len(handles) == 20
        request = ua.CreateMonitoredItemsParameters(
            SubscriptionId=cast(Any, second.subscription_id),
            TimestampsToReturn=ua.TimestampsToReturn.Both,
            ItemsToCreate=[
                ua.MonitoredItemCreateRequest(
                    ItemToMonitor=ua.ReadValueId(NodeId=level, AttributeId=ua.AttributeIds.Value),
                    MonitoringMode=ua.MonitoringMode.Reporting,
                    RequestedParameters=ua.MonitoringParameters(
                        ClientHandle=cast(Any, index), SamplingInterval=100, QueueSize=cast(Any, 1)
                    ),
                )
                for index in range(6)
            ],
        )
        with pytest.raises(UaStatusCodeError) as refused:
            await client.uaclient.create_monitored_items(request)
        assert refused.value.code == StatusCodes.BadTooManyMonitoredItems
        request.ItemsToCreate = request.ItemsToCreate[:5]
        created = await client.uaclient.create_monitored_items(request)
        assert all(result.StatusCode.is_good() for result in created)


async def test_sessions_created_again_and_again_on_one_channel_lock_nobody_out(
    projection: OpcUaProjection, opcua_client_certificate: ClientCertificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new session on a channel closes the channel's previous one: asyncua kept it open, counted, for its timeout."""
    monkeypatch.setattr(InternalSession, "max_connections", InternalSession._current_connections + 3)
    async with _session(projection, opcua_client_certificate, None) as churner:
        for _ in range(6):
            await churner.create_session()
            await churner.activate_session()
        assert await churner.get_node(_node(projection, "Level")).read_value() == 4.5
        async with _session(projection, opcua_client_certificate, OPERATOR) as operator:
            assert await operator.get_node(_node(projection, "Level")).read_value() == 4.5
