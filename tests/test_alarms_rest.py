"""Alarms wired into the hub: the demo plant's Modbus device drives a limit alarm seen on REST and MQTT,
acknowledged under the access rules, kept across a restart, written to the audit log; rules files checked."""

from __future__ import annotations

import base64
import hashlib
import secrets
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiohttp.test_utils import TestClient, TestServer

from aas_server.analytics.rules import parse_rules
from aas_server.api.app import create_app
from aas_server.api.auth import access_middleware
from aas_server.config import ApiKeySettings, EventSettings, HubSettings
from aas_server.mapping.schema import Table
from aas_server.model.events import Quality, QualityReason, ValueChanged, utc_now
from aas_server.persistence.alarms import AlarmDatabase
from aas_server.runtime.analytics import AlarmService
from aas_server.runtime.hub import Hub
from aas_server.security.access import AccessControl
from aas_server.security.audit import AuditLog
from tests.mqtt_broker import MosquittoBroker
from tests.support import ROOT, eventually, wait_until
from tests.test_access import (
    API,
    HS256_SECRET,
    INVALID,
    PRINCIPALS,
    SECRET_ENV,
    SHELL_A,
    SM_A,
    SM_B,
    build_store,
    hub_settings,
)
from tests.test_access import RULES as ACCESS_RULES
from tests.test_end_to_end import SENSOR, settings_for
from tests.test_events import subscribed

OPERATOR_KEY = "demo-operator-key"
VIEWER_KEY = "viewer-" + secrets.token_hex(8)
TEMPERATURE_REGISTER = 20
"""Holding register of the filler temperature (int16, 0.1 °C)."""

RULES = {
    "rules": [
        {
            "name": "filler-temperature",
            "kind": "limits",
            "element": {"submodel": SENSOR, "path": "Temperature"},
            "hi": 30.0,
            "deadband": 0.5,
            "severity": 500,
            "message": "Filler temperature {value} is {level} (limit {limit})",
        },
        {
            # always active for the demo's temperatures: to see an acknowledged state survive a restart
            "name": "filler-temperature-low",
            "kind": "limits",
            "element": {"submodel": SENSOR, "path": "Temperature"},
            "lo": 100.0,
            "severity": 100,
            "message": "Filler temperature {value} is below {limit}",
        },
    ]
}


def alarm_settings(data_dir: Path, broker: MosquittoBroker, repository: str) -> HubSettings:
    rules_file = data_dir.parent / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(RULES), encoding="utf-8")
    base = settings_for(data_dir)
    viewer = ApiKeySettings(name="viewer", roles=["read-only"], sha256=hashlib.sha256(VIEWER_KEY.encode()).hexdigest())
    return base.model_copy(
        update={
            "opcua": base.opcua.model_copy(update={"enabled": False}),
            "security": base.security.model_copy(
                update={"enabled": True, "api_keys": [*base.security.api_keys, viewer]}
            ),
            "events": EventSettings(enabled=True, port=broker.port, repository_id=repository),
            "analytics": base.analytics.model_copy(update={"rules_files": [rules_file]}),
        }
    )


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def alarms(http: aiohttp.ClientSession, url: str, **query: str) -> dict[str, dict[str, Any]]:
    async with http.get(f"{url}/alarms", params=query) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    return {alarm["id"]: alarm for alarm in body["result"]}


def listed(http: aiohttp.ClientSession, url: str, **query: str) -> Callable[[], Any]:
    return lambda: alarms(http, url, **query)


async def test_a_limit_alarm_from_the_device_is_listed_acknowledged_kept_audited_and_published(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    repository = "alarms-" + secrets.token_hex(4)
    data_dir = tmp_path / "data"
    settings = alarm_settings(data_dir, mosquitto, repository)
    operator = {"X-API-Key": OPERATOR_KEY}
    viewer = {"X-API-Key": VIEWER_KEY}
    alarm_topics = f"sm-repository/{repository}/submodels/{b64(SENSOR)}/submodelElements/Temperature/alarms/#"
    with subscribed(mosquitto, alarm_topics) as subscriber:
        async with Hub(settings) as hub, aiohttp.ClientSession() as http:
            assert hub.simulator is not None
            assert hub.rest_url is not None
            url = hub.rest_url
            hub.simulator.pause()
            hub.simulator.server.set_registers(Table.HOLDING_REGISTER, TEMPERATURE_REGISTER, [250])
            found = await eventually(
                listed(http, url), lambda found: found["filler-temperature-low"]["active"], within=5.0
            )
            assert found["filler-temperature"]["active"] is False

            # the device crosses the limit: active, unacknowledged, with the message of the rule
            hub.simulator.server.set_registers(Table.HOLDING_REGISTER, TEMPERATURE_REGISTER, [321])
            found = await eventually(
                listed(http, url, state="active", severity="500"),
                lambda found: "filler-temperature" in found,
                within=5.0,
            )
            alarm = found["filler-temperature"]
            assert alarm["acknowledged"] is False
            assert alarm["limitState"] == "High"
            assert alarm["message"] == "Filler temperature 32.1 is High (limit 30.0)"
            assert alarm["element"] == {"submodel": SENSOR, "path": "Temperature"}
            assert set(found) == {"filler-temperature"}, "the severity filter leaves the low-severity alarm out"
            elsewhere = b64("urn:aas-server:demo:aas:unknown")
            unacknowledged = await alarms(http, url, state="unacknowledged", shell=elsewhere)
            assert unacknowledged == {}, "no alarm on a shell that does not reference the sensor's submodel"
            of_sensor = await alarms(http, url, shell=b64("urn:aas-server:demo:aas:filler-temperature-sensor"))
            assert set(of_sensor) == {"filler-temperature", "filler-temperature-low"}
            of_capper = await alarms(http, url, shell=b64("urn:aas-server:demo:aas:capper"))
            assert of_capper == {}

            # a read-only caller may list but not acknowledge; nothing changes
            acknowledge = f"{url}/alarms/filler-temperature/acknowledge"
            async with http.post(acknowledge, json={"comment": "mine"}, headers=viewer) as response:
                assert response.status == 403, await response.text()
            assert (await alarms(http, url))["filler-temperature"]["acknowledged"] is False
            async with http.post(f"{url}/alarms/no-such-alarm/acknowledge", headers=operator) as response:
                assert response.status == 404, await response.text()
            async with http.post(acknowledge, json={"comment": 5}, headers=operator) as response:
                assert response.status == 400
                assert "comment" in (await response.json())["messages"][0]["text"]

            # the operator acknowledges with a comment; a second acknowledge does not fit the state
            async with http.post(acknowledge, json={"comment": "checking the cooler"}, headers=operator) as response:
                assert response.status == 200, await response.text()
                answer = await response.json()
            assert answer["alarm"]["acknowledged"] is True
            assert answer["alarm"]["comment"] == "checking the cooler"
            assert answer["alarm"]["commentUser"] == "demo-operator"
            assert answer["transition"]["transition"] == "acknowledged"
            async with http.post(acknowledge, headers=operator) as response:
                assert response.status == 409, await response.text()
            low = f"{url}/alarms/filler-temperature-low/acknowledge"
            async with http.post(low, json={"comment": "known, sensor range"}, headers=operator) as response:
                assert response.status == 200, await response.text()

            # the value returns below the limit less the deadband: inactive
            hub.simulator.server.set_registers(Table.HOLDING_REGISTER, TEMPERATURE_REGISTER, [240])
            found = await eventually(
                listed(http, url), lambda found: not found["filler-temperature"]["active"], within=5.0
            )
            assert found["filler-temperature"]["acknowledged"] is True
            assert found["filler-temperature"]["retain"] is False

            def cleared() -> bool:
                return any(event.topic.endswith("/filler-temperature/cleared") for event in subscriber.unique())

            await wait_until(cleared, within=5.0, what="the cleared alarm's event")
        published = [
            (event.topic.rsplit("/", 1)[1], event.json())
            for event in subscriber.unique()
            if "/alarms/filler-temperature/" in event.topic
        ]
    assert [kind for kind, _ in published] == ["activated", "acknowledged", "cleared"]
    assert published[1][1]["user"] == "demo-operator"
    assert published[1][1]["comment"] == "checking the cooler"
    assert published[0][1]["to"]["active"] is True
    assert published[0][1]["severity"] == 500

    # every transition is in the audit log, with who and the state after it
    records = [orjson.loads(line) for line in (data_dir / "audit.log").read_bytes().splitlines()]
    alarm_records = [
        record for record in records if record["method"] == "ALARM" and record["path"] == "filler-temperature"
    ]
    assert [record["operation"] for record in alarm_records] == ["activated", "acknowledged", "cleared"]
    assert alarm_records[1]["principal"] == "demo-operator"
    assert "checking the cooler" in alarm_records[1]["reason"]
    assert alarm_records[2]["status"].startswith("inactive,acknowledged")
    refused = [record for record in records if record["status"] == 403 and record["operation"] == "acknowledge"]
    assert refused
    assert refused[0]["principal"] == "viewer"

    # after a restart, the kept state is back: the always-active alarm stays acknowledged with its comment
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        assert hub.rest_url is not None
        found = await alarms(http, hub.rest_url)
    kept = found["filler-temperature-low"]
    assert kept["active"] is True
    assert kept["acknowledged"] is True
    assert kept["comment"] == "known, sensor range"
    assert kept["commentUser"] == "demo-operator"


def _check(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aas_server", "check", *map(str, files)], capture_output=True, text=True, timeout=120
    )


def test_check_refuses_a_rules_file_with_a_threshold_of_the_wrong_type_naming_the_place(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    rules = {"rules": [dict(RULES["rules"][0], hi="thirty")]}
    bad.write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = _check(bad)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{bad}: rules[0] (filler-temperature).hi:" in result.stderr


def test_check_refuses_settings_whose_rules_watch_an_element_that_does_not_exist(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules = {"rules": [dict(RULES["rules"][0], element={"submodel": SENSOR, "path": "Temprature"})]}
    rules_file.write_text(yaml.safe_dump(rules), encoding="utf-8")
    demo = yaml.safe_load((ROOT / "examples" / "bottling-line" / "hub.yaml").read_text(encoding="utf-8"))
    demo["twins"] = [str(ROOT / "examples" / "bottling-line" / "plant.yaml")]
    demo["mappings"] = [str(ROOT / "mappings" / "bottling-line.yaml")]
    demo["data_dir"] = str(tmp_path / "data")
    demo["analytics"] = {"rules_files": [str(rules_file)]}
    settings_file = tmp_path / "hub.yaml"
    settings_file.write_text(yaml.safe_dump(demo), encoding="utf-8")
    result = _check(settings_file)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{rules_file}: rules[0] (filler-temperature).element: no element 'Temprature'" in result.stderr


def test_the_demo_rules_are_valid_against_the_demo_plant() -> None:
    result = _check(
        ROOT / "examples" / "bottling-line" / "hub.yaml", ROOT / "examples" / "bottling-line" / "rules.yaml"
    )
    assert result.returncode == 0, result.stderr
    assert "monitoring rules ok (7 rules" in result.stdout


# --- access: every alarm route under the rules of tests/test_access.py -----------------------------

ACTIONS: list[tuple[str, dict[str, Any]]] = [
    ("acknowledge", {"comment": "seen"}),
    ("confirm", {}),
    ("comment", {"comment": "looking"}),
    ("shelve", {"comment": "maintenance"}),
    ("unshelve", {}),
]
"""Each operator action with a body that succeeds, in an order in which each fits the alarm's state."""


async def test_alarm_actions_are_the_acknowledge_operation_on_the_rules_element(tmp_path: Path) -> None:
    rules = parse_rules(
        {
            "rules": [
                {
                    "name": f"{name}-cold",
                    "kind": "limits",
                    "element": {"submodel": submodel, "path": "Temperature"},
                    "lo": 100.0,
                    "severity": 300,
                    "confirm": True,
                    "message": "cold: {value}",
                }
                for name, submodel in (("a", SM_A), ("b", SM_B))
            ]
        }
    ).rules
    acknowledging = {"roles": ["operator-a"], "operations": ["acknowledge"], "shells": [SHELL_A]}
    settings = hub_settings(tmp_path, rules=[*ACCESS_RULES, acknowledging])
    control = AccessControl.from_settings(settings, {SECRET_ENV: HS256_SECRET})
    store = build_store()
    async with (
        AlarmDatabase(tmp_path / "alarms.sqlite") as database,
        AlarmService(store, rules, database, control.audit, tick=0.05) as service,
    ):
        for submodel in (SM_A, SM_B):
            store.apply(ValueChanged(submodel, "Temperature", 20.0, utc_now()))
        app = create_app(store, middlewares=[access_middleware(control)], alarms=service)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        async with client:

            async def listing(principal: str) -> set[str]:
                response = await client.get(f"{API}/alarms", headers=PRINCIPALS[principal]())
                assert response.status == 200, await response.text()
                return {alarm["id"] for alarm in (await response.json())["result"] if alarm["active"]}

            await eventually(lambda: listing("viewer"), lambda ids: ids == {"a-cold", "b-cold"}, within=5.0)
            assert await listing("operator") == {"a-cold"}, "shell B's alarm is not readable for operator-a"
            refused = await client.get(f"{API}/alarms", headers=PRINCIPALS["nobody"]())
            assert refused.status == 403

            for action, body in ACTIONS:
                a_url = f"{API}/alarms/a-cold/{action}"
                for name, credentials in INVALID.items():
                    response = await client.post(a_url, json=body, headers=credentials())
                    assert response.status == 401, (action, name)
                for principal in ("viewer", "nobody", "semantic"):
                    response = await client.post(a_url, json=body, headers=PRINCIPALS[principal]())
                    assert response.status == 403, (action, principal)
                response = await client.post(
                    f"{API}/alarms/b-cold/{action}", json=body, headers=PRINCIPALS["operator"]()
                )
                assert response.status == 403, (action, "operator-a on shell B")
                response = await client.post(
                    f"{API}/alarms/missing/{action}", json=body, headers=PRINCIPALS["viewer"]()
                )
                assert response.status == 403, "an unknown alarm is no answer to who may not act"
                response = await client.post(f"{API}/alarms/missing/{action}", json=body, headers=PRINCIPALS["admin"]())
                assert response.status == 404
                response = await client.post(a_url, json=body, headers=PRINCIPALS["operator"]())
                assert response.status == 200, (action, await response.text())
                assert (await response.json())["transition"]["user"] == "alice"

            # paging: one alarm a page, the cursor leads to the next
            first = await (await client.get(f"{API}/alarms?limit=1", headers=PRINCIPALS["viewer"]())).json()
            cursor = first["paging_metadata"]["cursor"]
            second = await (
                await client.get(f"{API}/alarms?limit=1&cursor={cursor}", headers=PRINCIPALS["viewer"]())
            ).json()
            assert [first["result"][0]["id"], second["result"][0]["id"]] == ["a-cold", "b-cold"]
            assert second["paging_metadata"] == {}

            # a timed shelving: bad durations are refused with the field; a good one ends by the clock
            shelve = f"{API}/alarms/a-cold/shelve"
            for duration in (-1, 0, "soon", True, 10**9):
                response = await client.post(shelve, json={"duration": duration}, headers=PRINCIPALS["operator"]())
                assert response.status == 400, duration
                assert (await response.json())["messages"][0]["text"].startswith("duration:")
            response = await client.post(shelve, json={"duration": 0.2}, headers=PRINCIPALS["operator"]())
            assert response.status == 200, await response.text()
            assert (await response.json())["alarm"]["shelving"] == "TimedShelved"
            await wait_until(
                lambda: service.engine.alarms["a-cold"].shelving.value == "Unshelved", within=5.0, what="expiry"
            )
    await control.aclose()
    alarm_a = {alarm.name: alarm for alarm in service.alarms()}["a-cold"]
    alarm_b = {alarm.name: alarm for alarm in service.alarms()}["b-cold"]
    assert alarm_a.acknowledged
    assert alarm_a.confirmed
    assert alarm_a.comment == "maintenance"
    assert alarm_a.comment_user == "alice"
    assert alarm_a.shelving.value == "Unshelved"
    assert not alarm_b.acknowledged, "no refused request changed shell B's alarm"


async def test_each_shell_with_rules_gets_an_alarms_submodel_of_basic_event_elements(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(RULES), encoding="utf-8")
    base = settings_for(tmp_path / "data")
    settings = base.model_copy(
        update={
            "analytics": base.analytics.model_copy(update={"rules_files": [rules_file], "alarm_submodels": True}),
        }
    )
    shell_id = "urn:aas-server:demo:aas:filler-temperature-sensor"
    alarms_id = f"{shell_id}/alarms"
    for _start in range(2):  # created at the first start, replaced (not added twice) at the next
        async with Hub(settings) as hub, aiohttp.ClientSession() as http:
            assert hub.rest_url is not None
            async with http.get(f"{hub.rest_url}/submodels/{b64(alarms_id)}") as response:
                assert response.status == 200, await response.text()
                submodel = await response.json()
            async with http.get(f"{hub.rest_url}/shells/{b64(shell_id)}/submodel-refs") as response:
                references = [ref["keys"][-1]["value"] for ref in (await response.json())["result"]]
            async with http.get(
                f"{hub.rest_url}/shells/{b64('urn:aas-server:demo:aas:capper')}/submodel-refs"
            ) as response:
                capper = [ref["keys"][-1]["value"] for ref in (await response.json())["result"]]
        assert references.count(alarms_id) == 1
        assert not [reference for reference in capper if reference.endswith("/alarms")], "no rules on the capper"
        events = {element["idShort"]: element for element in submodel["submodelElements"]}
        assert set(events) == {"filler_temperature", "filler_temperature_low"}
        event = events["filler_temperature"]
        assert event["modelType"] == "BasicEventElement"
        assert event["observed"]["keys"] == [
            {"type": "Submodel", "value": SENSOR},
            {"type": "Property", "value": "Temperature"},
        ]
        assert event["direction"] == "output"
        assert event["messageTopic"].endswith(
            f"/submodels/{b64(SENSOR)}/submodelElements/Temperature/alarms/filler-temperature"
        )


async def test_at_start_good_values_are_evaluated_but_a_restored_uncertain_value_fires_no_quality_rule(
    tmp_path: Path,
) -> None:
    rules = parse_rules(
        {
            "rules": [
                {
                    "name": "a-not-good",
                    "kind": "bad_quality",
                    "element": {"submodel": SM_A, "path": "Temperature"},
                    "duration": 60,
                    "include_uncertain": True,
                    "severity": 300,
                    "message": "no good value for {duration} s",
                },
                {
                    "name": "b-high",
                    "kind": "limits",
                    "element": {"submodel": SM_B, "path": "Temperature"},
                    "hi": 50.0,
                    "severity": 300,
                    "message": "high: {value}",
                },
            ]
        }
    ).rules
    store = build_store()
    an_hour_ago = utc_now() - timedelta(hours=1)
    # as the hub restores a device value: uncertain (last usable) with the source time it had
    store.apply(ValueChanged(SM_A, "Temperature", 20.0, an_hour_ago, Quality.UNCERTAIN, QualityReason.LAST_USABLE))
    # a value written by a client before the restart: good
    store.apply(ValueChanged(SM_B, "Temperature", 80.0, an_hour_ago))
    audit = AuditLog(None)
    async with (
        AlarmDatabase(tmp_path / "alarms.sqlite") as database,
        AlarmService(store, rules, database, audit, tick=60.0) as service,
    ):
        alarms_now = {alarm.name: alarm for alarm in service.alarms()}
        assert alarms_now["b-high"].active, "a good value is evaluated at start, before any new change"
        assert list(service.engine.tick(utc_now())) == []
        assert not alarms_now["a-not-good"].active, "an hour-old restored value is not an hour without a good one"


def test_schema_rules_prints_the_json_schema_of_rules_files() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aas_server", "schema", "rules"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    schema = orjson.loads(result.stdout)
    assert schema["title"] == "AAS server monitoring rules file"
    kinds = {
        definition["properties"]["kind"]["const"]
        for definition in schema["$defs"].values()
        if "kind" in definition.get("properties", {})
    }
    assert kinds == {"limits", "rate", "stuck", "bad_quality", "state", "deviation"}
