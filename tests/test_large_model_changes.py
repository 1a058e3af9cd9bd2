"""A large valid model change keeps the hub responsive and consistent (issue 11, finding 13).

The hub runs whole on loopback (SQLite journal, REST, OPC UA). While a submodel of 40,000
Properties is created, replaced and deleted through REST, a bystander keeps reading a small
Property over REST and over OPC UA: every answer must come within ``BYSTANDER_SECONDS``, although
decoding, journaling and re-projecting such a submodel takes seconds of CPU. Meanwhile the store
shows the old or the new submodel, never a mixture, and a write queued behind the large change
lands after it on REST, OPC UA and in the journal alike.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from asyncua import Client, ua
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError
from pydantic import SecretStr

from aas_server.config import (
    HistorySettings,
    HubSettings,
    OpcUaSettings,
    RestSettings,
    SecuritySettings,
    UserSettings,
)
from aas_server.opcua.node_ids import node_id_for
from aas_server.runtime.hub import Hub
from tests.support import ClientCertificate, eventually, trust_client_certificate, wait_until
from tests.test_end_to_end import opcua_session

BYSTANDER_SECONDS = 0.5
"""Longest time the bystander may wait for any answer while the large change runs."""

ELEMENTS = 40_000
LARGE = "urn:test:large:sm:measurements"
SMALL = "urn:test:large:sm:bystander"
LAST = f"P{ELEMENTS - 1}"


def b64(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


def submodel(identifier: str, count: int, value: int) -> bytes:
    """A submodel of ``count`` xs:int Properties ``P0``... all holding ``value``, as a JSON body."""
    elements = [
        {"modelType": "Property", "idShort": f"P{index}", "valueType": "xs:int", "value": str(value)}
        for index in range(count)
    ]
    return json.dumps(
        {
            "modelType": "Submodel",
            "id": identifier,
            "idShort": identifier.rsplit(":", 1)[-1],
            "submodelElements": elements,
        }
    ).encode()


def settings_for(data_dir: Path) -> HubSettings:
    return HubSettings(
        data_dir=data_dir,
        rest=RestSettings(port=0),
        opcua=OpcUaSettings(port=0, users=[UserSettings(name="viewer", password=SecretStr("viewer-password"))]),
        history=HistorySettings(enabled=False),
        security=SecuritySettings(enabled=False),
    )


JSON = {"Content-Type": "application/json"}


@dataclass
class Bystander:
    """Reads ``P0`` of the small submodel over REST and over OPC UA, one after the other, until stopped."""

    http: aiohttp.ClientSession
    rest_url: str
    node: Any
    latencies: list[tuple[str, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    phase: str = "before"
    """What the test is doing, noted with each latency for the failure message."""
    phases: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        url = f"{self.rest_url}/submodels/{b64(SMALL)}/submodel-elements/P0/$value"
        while not stop.is_set():
            started = time.monotonic()
            async with self.http.get(url) as response:
                body = await response.read()
                if response.status != 200:
                    self.failures.append(f"REST {response.status}: {body[:200]!r}")
            self.latencies.append(("REST", time.monotonic() - started))
            self.phases.append(self.phase)
            started = time.monotonic()
            value = await self.node.read_value()
            if value != 5:
                self.failures.append(f"OPC UA read {value!r}")
            self.latencies.append(("OPC UA", time.monotonic() - started))
            self.phases.append(self.phase)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)  # pacing between reads, not synchronisation

    def slowest(self, protocol: str) -> tuple[float, str]:
        """The longest wait for a ``protocol`` answer, and during which phase it was."""
        return max(
            (latency, phase)
            for (name, latency), phase in zip(self.latencies, self.phases, strict=True)
            if name == protocol
        )


@contextlib.asynccontextmanager
async def bystander_reading(http: aiohttp.ClientSession, rest_url: str, node: Any) -> AsyncIterator[Bystander]:
    bystander = Bystander(http, rest_url, node)
    stop = asyncio.Event()
    task = asyncio.create_task(bystander.run(stop))
    try:
        yield bystander
    finally:
        stop.set()
        await task


def opcua_value_node(client: Client, hub: Hub, submodel_id: str, path: str) -> Any:
    assert hub.opcua is not None
    return client.get_node(ua.NodeId(ua.String(node_id_for(submodel_id, path)), ua.Int16(hub.opcua.namespace_index)))


async def opcua_value_or_none(node: Any) -> Any:
    try:
        return await node.read_value()
    except UaStatusCodeError as error:
        if error.code != StatusCodes.BadNodeIdUnknown:
            raise
        return None


async def opcua_value_eventually(node: Any, expected: Any) -> Any:
    """The node's value once it is ``expected`` (``None``: the node is gone); fails after a minute."""
    return await eventually(lambda: opcua_value_or_none(node), lambda value: value == expected, within=60)


@contextlib.asynccontextmanager
async def running_hub(
    data_dir: Path, certificate: ClientCertificate
) -> AsyncIterator[tuple[Hub, aiohttp.ClientSession, Client]]:
    trust_client_certificate(data_dir, certificate)
    async with Hub(settings_for(data_dir)) as hub, aiohttp.ClientSession() as http:
        assert hub.rest_url is not None
        assert hub.opcua is not None
        async with opcua_session(hub.opcua.endpoint_url, certificate, "viewer", "viewer-password") as client:
            yield hub, http, client


async def test_a_large_submodel_is_created_replaced_and_deleted_while_other_clients_are_served(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    async with running_hub(tmp_path, opcua_client_certificate) as (hub, http, client):
        assert hub.rest_url is not None
        async with http.post(f"{hub.rest_url}/submodels", data=submodel(SMALL, 1, 5), headers=JSON) as response:
            assert response.status == 201, await response.text()
        last = opcua_value_node(client, hub, LARGE, LAST)
        large_url = f"{hub.rest_url}/submodels/{b64(LARGE)}"
        async with bystander_reading(http, hub.rest_url, opcua_value_node(client, hub, SMALL, "P0")) as bystander:
            bystander.phase = "create"
            async with http.post(
                f"{hub.rest_url}/submodels", data=io.BytesIO(submodel(LARGE, ELEMENTS, 1)), headers=JSON
            ) as r:
                assert r.status == 201, await r.text()
                created = await r.json()
            assert len(created["submodelElements"]) == ELEMENTS
            assert await opcua_value_eventually(last, 1) == 1

            bystander.phase = "replace"
            async with http.put(large_url, data=io.BytesIO(submodel(LARGE, ELEMENTS, 2)), headers=JSON) as response:
                assert response.status == 204, await response.text()
            async with http.get(f"{large_url}/submodel-elements/{LAST}/$value") as response:
                assert await response.json() == {LAST: 2}
            assert await opcua_value_eventually(last, 2) == 2

            bystander.phase = "delete"
            async with http.delete(large_url) as response:
                assert response.status == 204, await response.text()
            async with http.get(large_url) as response:
                assert response.status == 404
            assert await opcua_value_eventually(last, None) is None

        assert bystander.failures == []
        assert len(bystander.latencies) > 20, "the bystander hardly read at all"
        for protocol in ("REST", "OPC UA"):
            slowest, phase = bystander.slowest(protocol)
            assert slowest < BYSTANDER_SECONDS, f"a {protocol} read waited {slowest:.3f} s ({phase})"


async def test_a_write_queued_behind_a_large_replace_lands_after_it_on_every_view(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    async with running_hub(tmp_path, opcua_client_certificate) as (hub, http, client):
        assert hub.rest_url is not None
        large_url = f"{hub.rest_url}/submodels/{b64(LARGE)}"
        async with http.post(
            f"{hub.rest_url}/submodels", data=io.BytesIO(submodel(LARGE, ELEMENTS, 1)), headers=JSON
        ) as r:
            assert r.status == 201, await r.text()
        last = opcua_value_node(client, hub, LARGE, LAST)
        await opcua_value_eventually(last, 1)

        mixtures: list[tuple[Any, Any, Any]] = []
        watching = True

        async def watch_the_store() -> None:
            """Old or new, never half: the first and last Property and the value state agree at every moment."""
            while watching:
                shown = hub.store.submodel(LARGE)
                first = shown.get_referable("P0")
                final = shown.get_referable(LAST)
                state = hub.store.state(LARGE, LAST)
                assert state is not None
                seen = (getattr(first, "value", None), getattr(final, "value", None), state.value)
                if len(set(seen)) != 1:
                    mixtures.append(seen)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch_the_store())
        replacing = asyncio.create_task(
            http.put(large_url, data=io.BytesIO(submodel(LARGE, ELEMENTS, 2)), headers=JSON)
        )
        await wait_until(lambda: hub.store.change_lock(LARGE).locked(), within=30, what="the replace to take its lock")
        async with http.patch(f"{large_url}/submodel-elements/P5/$value", json=7) as response:
            assert response.status == 204, await response.text()
        replaced = await replacing
        assert replaced.status == 204, await replaced.text()
        replaced.release()
        watching = False
        await watcher
        assert mixtures == [], f"the store showed a half-replaced submodel: {mixtures[:3]}"

        for path, expected in (("P5", 7), ("P6", 2), (LAST, 2)):
            async with http.get(f"{large_url}/submodel-elements/{path}/$value") as response:
                assert await response.json() == {path: expected}
            assert await opcua_value_eventually(opcua_value_node(client, hub, LARGE, path), expected) == expected

    async with running_hub(tmp_path, opcua_client_certificate) as (hub, http, client):
        assert hub.rest_url is not None
        for path, expected in (("P5", 7), ("P6", 2)):
            async with http.get(f"{hub.rest_url}/submodels/{b64(LARGE)}/submodel-elements/{path}/$value") as response:
                assert await response.json() == {path: expected}, "the journal disagrees after a restart"
