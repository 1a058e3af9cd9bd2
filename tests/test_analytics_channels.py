"""KPIs and predictive-maintenance results are twin values like any other: the same value on REST,
OPC UA (asyncua client on the hub's endpoint) and MQTT (a private Mosquitto), and in the history."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from asyncua.ua.status_codes import StatusCodes

from aas_server.config import EventSettings, HubSettings
from aas_server.model.events import Quality
from aas_server.opcua.node_ids import node_id_for
from aas_server.runtime.hub import Hub
from tests.mqtt_broker import MosquittoBroker
from tests.support import ClientCertificate, eventually, status_of, wait_until
from tests.test_demo_kpi_faults import FILLER_KPI, demo_settings_without_breaks
from tests.test_end_to_end import element_url, opcua_node, opcua_session
from tests.test_events import EventSubscriber, b64, repository_id, subscribed, value_topic

FILLER_MOTOR = "urn:aas-server:demo:sm:filler-motor:operational-data"
FILLER_MOTOR_PREDICTIVE = "urn:aas-server:demo:aas:filler-motor/predictive-maintenance"


def channel_settings(tmp_path: Path, broker: MosquittoBroker, repository: str) -> HubSettings:
    """The demo hub with its KPIs (computed when the test says: ``hub.kpis.update()``), OPC UA and MQTT."""
    base = demo_settings_without_breaks(tmp_path)
    return base.model_copy(
        update={
            "opcua": base.opcua.model_copy(update={"enabled": True}),
            "events": EventSettings(enabled=True, port=broker.port, repository_id=repository),
            "analytics": base.analytics.model_copy(update={"kpi_interval": 3600.0}),
        }
    )


def last_payload(subscriber: EventSubscriber, topic: str) -> dict[str, Any] | None:
    events = subscriber.on(topic)
    if not events:
        return None
    payload: dict[str, Any] = events[-1].json()
    return payload


async def rest_value(http: aiohttp.ClientSession, url: str) -> tuple[Any, str]:
    """The ``$value`` of an element (wrapped in its own idShort, the path's last part) and its quality."""
    async with http.get(f"{url}/$value") as response:
        assert response.status == 200, await response.text()
        body = await response.json()
        return body[url.rsplit(".", 1)[-1].rsplit("/", 1)[-1]], response.headers["X-AAS-Quality"]


async def history_values(http: aiohttp.ClientSession, url: str) -> list[Any]:
    async with http.get(f"{url}/history") as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    return [(item["value"], item["quality"]) for item in body["result"]]


async def test_an_oee_is_the_same_on_rest_opc_ua_mqtt_and_in_the_history(
    tmp_path: Path, mosquitto: MosquittoBroker, opcua_client_certificate: ClientCertificate
) -> None:
    repository = repository_id()
    kpi_filter = f"sm-repository/{repository}/submodels/{b64(FILLER_KPI)}/#"
    with subscribed(mosquitto, kpi_filter) as subscriber:
        async with Hub(channel_settings(tmp_path, mosquitto, repository)) as hub, aiohttp.ClientSession() as http:
            assert hub.kpis is not None
            assert hub.rest_url is not None
            assert hub.opcua is not None
            kpis, store = hub.kpis, hub.store
            # the filler has run and filled bottles: the last hour has an OEE
            recorder = kpis.recorders[0]
            await wait_until(lambda: len(recorder.increments) >= 2, within=15, what="bottles counted")
            kpis.update()
            state = store.state(FILLER_KPI, "LastHour.OEE")
            assert state is not None
            assert state.quality is Quality.GOOD
            oee = state.value
            assert 0 < oee <= 1.5

            url = element_url(hub.rest_url, FILLER_KPI, "LastHour.OEE")
            assert await rest_value(http, url) == (oee, "good")

            projection = hub.opcua
            async with opcua_session(projection.endpoint_url, opcua_client_certificate, "viewer", "demo-viewer") as ua:
                node = opcua_node(ua, node_id_for(FILLER_KPI, "LastHour.OEE"), projection.namespace_index)
                data = await node.read_data_value()
            assert data.Value is not None
            assert data.Value.Value == oee
            assert status_of(data) == StatusCodes.Good
            assert data.SourceTimestamp == state.source_time

            topic = value_topic(repository, FILLER_KPI, "LastHour.OEE")
            payload = await eventually(
                lambda: asyncio.sleep(0, last_payload(subscriber, topic)),
                lambda found: found is not None and found["value"] == oee,
                within=10,
            )
            assert (payload["quality"], payload["origin"]) == ("good", "kpi")

            assert (oee, "good") in await history_values(http, url)
            # the state beside the windows is recorded too
            state_url = element_url(hub.rest_url, FILLER_KPI, "MachineState")
            assert ("running", "good") in await history_values(http, state_url)


async def test_predictive_results_reach_mqtt_and_the_history(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    repository = repository_id()
    settings = channel_settings(tmp_path, mosquitto, repository)
    settings = settings.model_copy(update={"opcua": settings.opcua.model_copy(update={"enabled": False})})
    with subscribed(mosquitto, f"sm-repository/{repository}/submodels/{b64(FILLER_MOTOR_PREDICTIVE)}/#") as subscriber:
        async with Hub(settings) as hub, aiohttp.ClientSession() as http:
            assert hub.rest_url is not None
            url = element_url(hub.rest_url, FILLER_MOTOR_PREDICTIVE, "FillerMotorWear.LastUpdate")
            _, quality = await eventually(
                lambda: rest_value(http, url), lambda found: found[0] is not None and found[1] == "good", within=15
            )
            topic = value_topic(repository, FILLER_MOTOR_PREDICTIVE, "FillerMotorWear.LastUpdate")
            payload = await eventually(
                lambda: asyncio.sleep(0, last_payload(subscriber, topic)),
                lambda found: found is not None,
                within=10,
            )
            assert payload["origin"] == "predictive"
            recorded = await eventually(lambda: history_values(http, url), lambda found: len(found) >= 2, within=10)
            assert quality == "good"
            assert all(found_quality == "good" for _, found_quality in recorded)
            times = [value for value, _ in recorded]
            assert times == sorted(set(times)), "each estimate's LastUpdate recorded once, in order"
