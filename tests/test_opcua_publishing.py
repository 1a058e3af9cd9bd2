"""Prompt publishing over the wire: a change after a quiet interval is sent at once, the pace and keep-alives hold."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import Subscription
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from basyx.aas import model
from pydantic import SecretStr

from aas_server.config import OpcUaSettings, Role, UserSettings
from aas_server.model.events import ValueChanged, utc_now
from aas_server.opcua import OpcUaProjection, node_id_for
from aas_server.store.twin_store import TwinStore
from tests.support import CLIENT_URI, ClientCertificate, trust_client_certificate, wait_until

SUBMODEL_ID = "https://example.com/ids/sm/publishing"
VIEWER = UserSettings(name="victor", password=SecretStr("viewer-secret"), role=Role.READ_ONLY)


class _Arrivals:
    """Data change notifications with the moment (``time.monotonic``) each reached the client."""

    def __init__(self) -> None:
        self.values: list[tuple[float, Any]] = []

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        self.values.append((time.monotonic(), value))


@pytest.fixture
def store() -> TwinStore:
    twin = TwinStore()
    twin.add_all(
        [model.Submodel(SUBMODEL_ID, id_short="Publishing", submodel_element=[model.Property("Level", float, 0.0)])]
    )
    return twin


@pytest.fixture
async def projection(
    store: TwinStore, tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> AsyncIterator[OpcUaProjection]:
    trust_client_certificate(tmp_path, opcua_client_certificate)
    async with OpcUaProjection(store, OpcUaSettings(port=0, users=[VIEWER]), tmp_path) as running:
        yield running


@asynccontextmanager
async def _subscribed(
    projection: OpcUaProjection, certificate: ClientCertificate, interval_ms: float, keep_alive_count: int = 10
) -> AsyncIterator[tuple[Subscription, _Arrivals]]:
    client = Client(projection.endpoint_url, timeout=5)
    client.application_uri = CLIENT_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(certificate.certificate),
        str(certificate.private_key),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    client.set_user(VIEWER.name)
    client.set_password(VIEWER.password.get_secret_value())
    async with client:
        arrivals = _Arrivals()
        parameters = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=cast(Any, interval_ms),
            RequestedLifetimeCount=cast(Any, keep_alive_count * 10),
            RequestedMaxKeepAliveCount=cast(Any, keep_alive_count),
            PublishingEnabled=True,
        )
        subscription = await client.create_subscription(parameters, arrivals)
        node = client.get_node(
            ua.NodeId(ua.String(node_id_for(SUBMODEL_ID, "Level")), ua.Int16(projection.namespace_index))
        )
        await subscription.subscribe_data_change(node)
        await wait_until(lambda: len(arrivals.values) == 1, within=5.0, what="the initial notification")
        yield subscription, arrivals


def _change(store: TwinStore, value: float) -> float:
    now = utc_now()
    store.apply(ValueChanged(SUBMODEL_ID, "Level", value, now, server_time=now))
    return time.monotonic()


async def test_a_change_after_a_quiet_interval_is_sent_at_once_and_the_next_one_an_interval_later(
    projection: OpcUaProjection, store: TwinStore, opcua_client_certificate: ClientCertificate
) -> None:
    """With a 1 s publishing interval a change used to wait for the subscription's next tick (0.5 s on average)."""
    async with _subscribed(projection, opcua_client_certificate, interval_ms=1000.0) as (_, arrivals):
        initial_arrival = arrivals.values[0][0]
        # The scenario: the value stays the same for longer than one publishing interval (1.2 s), so a
        # fixed 1 s clock that ticked with the initial notification would hold the change ~0.8 s.
        await asyncio.sleep(max(0.0, initial_arrival + 1.2 - time.monotonic()))
        changed = _change(store, 1.5)
        await wait_until(lambda: len(arrivals.values) == 2, within=3.0, what="the first change")
        first_arrival, first_value = arrivals.values[1]
        assert first_value == 1.5
        assert first_arrival - changed < 0.4, f"the change took {first_arrival - changed:.3f} s to arrive"

        # A change right after it is held for the rest of the interval: one message per interval at most.
        _change(store, 2.5)
        await wait_until(lambda: len(arrivals.values) == 3, within=3.0, what="the second change")
        second_arrival, second_value = arrivals.values[2]
        assert second_value == 2.5
        assert second_arrival - first_arrival > 0.8, f"two messages {second_arrival - first_arrival:.3f} s apart"


async def test_a_quiet_subscription_still_sends_its_keep_alives(
    projection: OpcUaProjection, opcua_client_certificate: ClientCertificate
) -> None:
    """A client judges its subscription alive by the keep-alives (every 3 x 100 ms here) while nothing changes."""
    async with _subscribed(projection, opcua_client_certificate, interval_ms=100.0, keep_alive_count=3) as (
        subscription,
        arrivals,
    ):
        seen: list[float] = []

        def another_message() -> bool:
            last = subscription.last_publish_at
            if last is not None and (not seen or last > seen[-1]):
                seen.append(last)
            return len(seen) >= 4

        await wait_until(another_message, within=3.0, what="three keep-alives")
        assert len(arrivals.values) == 1, "keep-alives carry no data changes"
        gaps = [later - earlier for earlier, later in itertools.pairwise(seen)]
        assert all(0.2 < gap < 1.0 for gap in gaps), f"keep-alives {gaps} s apart, expected about 0.3 s"
        assert not subscription.is_stale(margin=2.0)
