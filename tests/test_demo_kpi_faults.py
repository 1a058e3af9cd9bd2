"""The demo's KPIs see its faults: a jam injected on the running demo hub makes the filler "down" with
the reason "jam", and fills MTBF, MTTR and the downtime by reason on REST, per the demo's own KPI file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from aas_server.config import HubSettings
from aas_server.devices.bottling_line import JAM_FAULT_CODE
from aas_server.runtime.demo_faults import fault_submodel_id
from aas_server.runtime.hub import Hub
from tests.support import ROOT, eventually
from tests.test_end_to_end import element_url, settings_for

FILLER_KPI = "urn:aas-server:demo:aas:filler/kpi"
DEMO_KPI = ROOT / "examples" / "bottling-line" / "kpi.yaml"


def demo_settings_without_breaks(tmp_path: Path) -> HubSettings:
    """The demo hub with the demo's KPI file, its shift breaks taken out.

    A break is a planned stop and wins over the device state, so a test run at 10:00 or 18:00 Berlin
    time would see no down time; everything else (signals, fault word, reasons) is the demo's.
    """
    kpi = yaml.safe_load(DEMO_KPI.read_text(encoding="utf-8"))
    for asset in kpi["assets"]:
        for shift in asset["calendar"]["shifts"]:
            shift.pop("breaks", None)
    kpi_file = tmp_path / "kpi.yaml"
    kpi_file.write_text(yaml.safe_dump(kpi), encoding="utf-8")
    base = settings_for(tmp_path / "data")
    return base.model_copy(
        update={
            "opcua": base.opcua.model_copy(update={"enabled": False}),
            "analytics": base.analytics.model_copy(update={"kpi_files": [kpi_file], "kpi_interval": 0.1}),
        }
    )


def test_the_demo_kpi_file_books_the_filler_fault_word_with_the_jam_as_reason() -> None:
    kpi = yaml.safe_load(DEMO_KPI.read_text(encoding="utf-8"))
    filler = next(asset for asset in kpi["assets"] if asset["asset"] == "urn:aas-server:demo:aas:filler")
    assert filler["fault"]["signal"]["id_short_path"] == "FaultCode"
    assert filler["fault"]["reasons"][JAM_FAULT_CODE] == "jam"


def invoke(kind: str | None) -> dict[str, Any]:
    if kind is None:
        return {}
    argument = {"modelType": "Property", "idShort": "Kind", "valueType": "xs:string", "value": kind}
    return {"inputArguments": [{"value": argument}]}


async def test_a_jam_on_the_demo_hub_is_down_time_with_its_reason_and_fills_mtbf_and_mttr(tmp_path: Path) -> None:
    async with Hub(demo_settings_without_breaks(tmp_path)) as hub, aiohttp.ClientSession() as http:
        rest_url = hub.rest_url
        assert rest_url is not None

        async def value(path: str) -> Any:
            async with http.get(f"{element_url(rest_url, FILLER_KPI, path)}/$value") as response:
                assert response.status == 200, await response.text()
                return (await response.json())[path.rsplit(".", 1)[-1]]

        async def state() -> tuple[Any, Any]:
            return await value("MachineState"), await value("MachineStateReason")

        async def operation(name: str, kind: str | None = None) -> None:
            url = element_url(rest_url, fault_submodel_id("bottling-plc"), name) + "/invoke"
            async with http.post(url, json=invoke(kind)) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["success"] is True

        assert await eventually(state, lambda found: found == ("running", ""), within=15) == ("running", "")
        assert await value("LastHour.FailureEvents") == 0
        assert orjson.loads(await value("LastHour.DowntimeByReason")) == {}

        await operation("InjectFault", "jam")
        assert await eventually(state, lambda found: found == ("down", "jam"), within=10) == ("down", "jam")
        by_reason = await eventually(
            lambda: value("LastHour.DowntimeByReason"), lambda found: orjson.loads(found).get("jam", 0) > 0.3, within=10
        )
        assert list(orjson.loads(by_reason)) == ["jam"]

        await operation("ClearFaults")
        assert await eventually(state, lambda found: found == ("running", ""), within=15) == ("running", "")
        # one repaired jam: MTTR is its length, MTBF the production time so far, availability below 1
        # (the whole window in one read: the service rewrites it every 0.1 s, always all at once)
        kpis = await value("LastHour")
        downtime = orjson.loads(kpis["DowntimeByReason"])
        assert kpis["FailureEvents"] == 1
        assert list(downtime) == ["jam"]
        assert kpis["MTTR"] == pytest.approx(downtime["jam"]) == pytest.approx(kpis["ActualDowntime"])
        assert kpis["MTBF"] == pytest.approx(kpis["ActualProductionTime"])
        assert kpis["MTBF"] > 0
        assert 0 < kpis["Availability"] < 1
        # the line and the plant roll the filler's failure up
        async with http.get(
            f"{element_url(rest_url, 'urn:aas-server:demo:aas:plant/kpi', 'LastHour.FailureEvents')}/$value"
        ) as response:
            assert (await response.json())["FailureEvents"] == 1


async def test_the_demo_started_with_a_jam_shows_the_filler_down_from_the_start(tmp_path: Path) -> None:
    """``aas-server demo --fault jam``: the simulator settings' faults play from the first step."""
    settings = demo_settings_without_breaks(tmp_path)
    settings = settings.model_copy(update={"simulator": settings.simulator.model_copy(update={"faults": ["jam"]})})
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        rest_url = hub.rest_url
        assert rest_url is not None

        async def window() -> dict[str, Any]:
            async with http.get(f"{element_url(rest_url, FILLER_KPI, 'LastHour')}/$value") as response:
                assert response.status == 200, await response.text()
                found: dict[str, Any] = (await response.json())["LastHour"]
                return found

        kpis = await eventually(window, lambda found: orjson.loads(found["DowntimeByReason"]).get("jam", 0) > 0.3)
        assert kpis["FailureEvents"] == 1
        assert kpis["ActualProductionTime"] == 0
        assert kpis["Availability"] == 0
        async with http.get(f"{element_url(rest_url, FILLER_KPI, 'MachineStateReason')}/$value") as response:
            assert (await response.json())["MachineStateReason"] == "jam"
