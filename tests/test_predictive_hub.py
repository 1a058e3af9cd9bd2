"""Predictive maintenance wired into the hub: the demo plant's Modbus temperature register, read as a
wear signal rising linearly, gives a remaining-useful-life estimate on REST that shrinks as the value
rises; the estimator's history and the anomaly detector's learnt state survive a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from aas_server.config import HubSettings, PredictiveSettings, load_settings
from aas_server.errors import ConfigurationError
from aas_server.mapping.schema import Table
from aas_server.runtime.hub import Hub
from aas_server.runtime.predictive import PREDICTIVE_SEMANTIC_ID
from tests.support import eventually, wait_until
from tests.test_end_to_end import SENSOR, element_url, settings_for

TEMPERATURE_REGISTER = 20
"""Holding register of the filler temperature (int16, 0.1 °C)."""
THRESHOLD = 60.0
SIGNAL = {"submodel_id": SENSOR, "id_short_path": "Temperature"}
HORIZON_S = 3600.0
RUL_RULES = {
    "rules": [
        {
            "name": "filler-wear-rul",
            "kind": "limits",
            "element": {
                "submodel": "urn:aas-server:demo:aas:filler-temperature-sensor/predictive-maintenance",
                "path": "FillerWear.RemainingUsefulLifetime.DurationValue",
            },
            "lo": HORIZON_S,
            "severity": 700,
            "message": "Filler wear: {value} s of useful life left (horizon {limit} s)",
        }
    ]
}


def predictive_settings(data_dir: Path) -> HubSettings:
    base = settings_for(data_dir)
    section = PredictiveSettings(
        wear=[{"name": "FillerWear", "signal": SIGNAL, "failure_threshold": THRESHOLD, "history": 50}],
        detectors=[{"name": "FillerTemperatureAnomaly", "signals": [SIGNAL], "warm_up": 10}],
    )
    # the maintenance alarm: an ordinary limits rule on the RUL element of the PredictiveMaintenance submodel
    rules_file = data_dir.parent / "predictive-rules.yaml"
    rules_file.write_text(yaml.safe_dump(RUL_RULES), encoding="utf-8")
    files = [*base.analytics.rules_files, rules_file]
    return base.model_copy(
        update={
            "opcua": base.opcua.model_copy(update={"enabled": False}),
            "analytics": base.analytics.model_copy(update={"predictive": section, "rules_files": files}),
        }
    )


def predictive_submodel(hub: Hub) -> str:
    for shell in hub.store.shells():
        if any(reference.key[-1].value == SENSOR for reference in shell.submodel):
            return f"{shell.id}/predictive-maintenance"
    raise AssertionError("no shell references the sensor submodel")


async def set_temperature(hub: Hub, tenths: int) -> None:
    assert hub.simulator is not None
    hub.simulator.server.set_registers(Table.HOLDING_REGISTER, TEMPERATURE_REGISTER, [tenths])
    await wait_until(
        lambda: (state := hub.store.state(SENSOR, "Temperature")) is not None and state.value == tenths / 10,
        within=5.0,
        what=f"temperature {tenths / 10}",
    )


async def read(http: aiohttp.ClientSession, url: str, submodel: str, path: str) -> Any:
    async with http.get(f"{element_url(url, submodel, path)}/$value") as response:
        if response.status != 200:
            return None
        body = await response.json()
    return body[path.rsplit(".", 1)[-1]]


async def updated_after(http: aiohttp.ClientSession, url: str, submodel: str, name: str, before: Any) -> Any:
    """Wait until the result collection ``name`` has a LastUpdate other than ``before``; return it."""
    return await eventually(
        lambda: read(http, url, submodel, f"{name}.LastUpdate"), lambda last: last not in (None, "", before), within=5.0
    )


async def test_rul_from_a_rising_wear_register_shrinks_on_rest_and_the_state_survives_a_restart(
    tmp_path: Path,
) -> None:
    settings = predictive_settings(tmp_path / "data")
    remaining: list[float] = []
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        assert hub.simulator is not None
        assert hub.rest_url is not None
        assert hub.predictive is not None
        url = hub.rest_url
        hub.simulator.pause()
        submodel = predictive_submodel(hub)
        async with http.get(f"{url}/submodels/{_b64(submodel)}") as response:
            assert response.status == 200, await response.text()
            body = await response.json()
        assert body["semanticId"]["keys"][0]["value"] == PREDICTIVE_SEMANTIC_ID
        last = None
        for step in range(20):
            last = await read(http, url, submodel, "FillerWear.LastUpdate")
            await set_temperature(hub, 300 + 10 * step)  # 30.0, 31.0, ... 49.0 °C, one step per poll
            if step >= 12:
                last = await updated_after(http, url, submodel, "FillerWear", last)
                rul = await read(http, url, submodel, "FillerWear.RemainingUsefulLifetime.DurationValue")
                lower = await read(http, url, submodel, "FillerWear.RemainingUsefulLifeLower")
                assert isinstance(rul, float)
                assert rul > 0
                assert isinstance(lower, float)
                assert lower <= rul
                remaining.append(rul)
        # the value rose by 7 °C of the 30 °C to the threshold: the estimate shrank with it
        assert remaining[-1] < remaining[0], remaining
        # a client cannot fake the estimate: the result Properties are read-only
        rul_url = f"{element_url(url, submodel, 'FillerWear.RemainingUsefulLifetime.DurationValue')}/$value"
        async with http.patch(rul_url, json=1e9) as response:
            assert response.status == 403, await response.text()
            assert "read-only" in await response.text()
        assert await read(http, url, submodel, "FillerWear.RemainingUsefulLifetime.DurationValue") == remaining[-1]
        # the RUL is under the maintenance horizon: its alarm is active on REST
        async with http.get(f"{url}/alarms", params={"state": "active"}) as response:
            assert response.status == 200, await response.text()
            active = {alarm["id"] for alarm in (await response.json())["result"]}
        assert "filler-wear-rul" in active, active
        anomaly_before = await read(http, url, submodel, "FillerTemperatureAnomaly.LastUpdate")
        assert anomaly_before, "the detector scored after its warm-up"
        wear_before = last

    # after a restart one new sample is enough for a new estimate and a new score: the history and the
    # learnt state were kept (without them 10 samples would be needed before either appears)
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        assert hub.simulator is not None
        assert hub.rest_url is not None
        hub.simulator.pause()
        url = hub.rest_url
        submodel = predictive_submodel(hub)
        # the kept history gives an estimate at start, before any new sample
        restored = await read(http, url, submodel, "FillerWear.RemainingUsefulLifetime.DurationValue")
        assert isinstance(restored, float)
        assert restored < remaining[0]
        wear_before = await read(http, url, submodel, "FillerWear.LastUpdate")
        await set_temperature(hub, 500)
        assert await updated_after(http, url, submodel, "FillerWear", wear_before)
        assert await updated_after(http, url, submodel, "FillerTemperatureAnomaly", anomaly_before)
        rul = await read(http, url, submodel, "FillerWear.RemainingUsefulLifetime.DurationValue")
        assert isinstance(rul, float)
        assert 0 < rul < remaining[0]


async def test_a_wear_signal_on_a_missing_element_stops_the_start_with_its_place(tmp_path: Path) -> None:
    settings = predictive_settings(tmp_path / "data")
    bad = {"submodel_id": SENSOR, "id_short_path": "NoSuchElement"}
    settings = settings.model_copy(
        update={
            "analytics": settings.analytics.model_copy(
                update={"predictive": PredictiveSettings(wear=[{"name": "W", "signal": bad, "failure_threshold": 1}])}
            )
        }
    )
    with pytest.raises(ConfigurationError, match=r"analytics\.predictive\.wear\[0\]: .*NoSuchElement: no such element"):
        async with Hub(settings):
            pass


def _b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_a_relative_predictive_database_path_is_relative_to_the_settings_file(tmp_path: Path) -> None:
    settings_file = tmp_path / "site" / "hub.yaml"
    settings_file.parent.mkdir()
    settings_file.write_text(
        yaml.safe_dump({"analytics": {"predictive": {"sqlite_path": "state/predictive.sqlite"}}}), encoding="utf-8"
    )
    settings = load_settings(settings_file)
    assert settings.predictive_path == (tmp_path / "site" / "state" / "predictive.sqlite").resolve()
