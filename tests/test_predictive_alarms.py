"""Predictive maintenance raises alarms: on the demo hub, the filler motor's vibration register is
driven healthy, then rising. An anomaly that persists (a ``state`` rule on ``AnomalyPersistent``)
and a remaining useful life under the maintenance horizon (a ``limits`` rule on
``RemainingUsefulLifetime.DurationValue``, IDTA 02048) each become an active alarm on REST
``GET /alarms``; the anomaly alarm goes when the vibration is healthy again."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from aas_server.config import HubSettings, PredictiveSettings
from aas_server.runtime.hub import Hub
from tests.support import eventually, wait_until
from tests.test_end_to_end import element_url, settings_for

FILLER_MOTOR = "urn:aas-server:demo:sm:filler-motor:operational-data"
PREDICTIVE = "urn:aas-server:demo:aas:filler-motor/predictive-maintenance"
VIBRATION = {"submodel_id": FILLER_MOTOR, "id_short_path": "Vibration"}
HORIZON_S = 600.0
RULES = {
    "rules": [
        {
            "name": "filler-motor-anomaly",
            "kind": "state",
            "element": {"submodel": PREDICTIVE, "path": "FillerMotorVibrationAnomaly.AnomalyPersistent"},
            "severity": 600,
            "message": "Filler motor vibration is anomalous and it persists",
        },
        {
            "name": "filler-motor-rul",
            "kind": "limits",
            "element": {"submodel": PREDICTIVE, "path": "FillerMotorWear.RemainingUsefulLifetime.DurationValue"},
            "lo": HORIZON_S,
            "severity": 700,
            "message": "Filler motor: {value:.0f} s of useful life left (horizon {limit:.0f} s)",
        },
    ]
}


def alarm_settings(tmp_path: Path) -> HubSettings:
    """The demo hub whose physics never steps (the test writes the vibration register), with a vibration
    anomaly detector, the filler motor wear signal and the two maintenance rules."""
    base = settings_for(tmp_path / "data")
    rules_file = tmp_path / "maintenance-rules.yaml"
    rules_file.write_text(yaml.safe_dump(RULES), encoding="utf-8")
    anomaly = {"name": "FillerMotorVibrationAnomaly", "signals": [VIBRATION], "warm_up": 30, "persist_samples": 3}
    predictive = PredictiveSettings(
        detectors=[anomaly],
        wear=[{"name": "FillerMotorWear", "signal": VIBRATION, "failure_threshold": 7.1, "history": 50}],
    )
    return base.model_copy(
        update={
            "opcua": base.opcua.model_copy(update={"enabled": False}),
            "simulator": base.simulator.model_copy(update={"update_interval": 60.0}),
            "analytics": base.analytics.model_copy(
                update={"predictive": predictive, "rules_files": [*base.analytics.rules_files, rules_file]}
            ),
        }
    )


async def alarms(http: aiohttp.ClientSession, rest_url: str) -> dict[str, dict[str, Any]]:
    async with http.get(f"{rest_url}/alarms") as response:
        assert response.status == 200, await response.text()
        return {alarm["id"]: alarm for alarm in (await response.json())["result"]}


async def active(http: aiohttp.ClientSession, rest_url: str) -> set[str]:
    async with http.get(f"{rest_url}/alarms", params={"state": "active"}) as response:
        assert response.status == 200, await response.text()
        return {alarm["id"] for alarm in (await response.json())["result"]}


async def test_a_persisting_anomaly_and_a_short_remaining_life_raise_their_alarms_on_rest(tmp_path: Path) -> None:
    async with Hub(alarm_settings(tmp_path)) as hub, aiohttp.ClientSession() as http:
        simulator, rest_url = hub.simulator, hub.rest_url
        assert simulator is not None
        assert rest_url is not None
        simulator.pause()
        previous: list[float] = []

        async def vibration(value: float) -> None:
            value = round(value, 2)
            assert not previous or value != previous[-1], "each sample must change the value"
            previous.append(value)
            simulator.write_point("filler-motor.Vibration", value)
            await wait_until(
                lambda: (state := hub.store.state(FILLER_MOTOR, "Vibration")) is not None and state.value == value,
                within=5.0,
                what=f"vibration {value} mm/s",
            )

        # healthy: 2 mm/s with a few hundredths of noise, the detector's warm-up
        healthy = (2.00, 2.03, 1.98, 2.02, 1.97, 2.01)
        for step in range(32):
            await vibration(healthy[step % len(healthy)])
        assert {"filler-motor-anomaly", "filler-motor-rul"}.isdisjoint(await active(http, rest_url))

        # a worn bearing: the vibration rises steadily towards the 7.1 mm/s failure threshold
        for step in range(12):
            await vibration(5.0 + 0.1 * step)
        found = await eventually(
            lambda: active(http, rest_url),
            lambda names: {"filler-motor-anomaly", "filler-motor-rul"} <= names,
            within=5.0,
        )
        assert {"filler-motor-anomaly", "filler-motor-rul"} <= found
        listed = await alarms(http, rest_url)
        rul_url = f"{element_url(rest_url, PREDICTIVE, 'FillerMotorWear.RemainingUsefulLifetime.DurationValue')}/$value"
        async with http.get(rul_url) as response:
            remaining = (await response.json())["DurationValue"]
        assert 0 < remaining < HORIZON_S
        rul_alarm = listed["filler-motor-rul"]
        assert rul_alarm["severity"] == 700
        assert (rul_alarm["acknowledged"], rul_alarm["limitState"]) == (False, "Low")
        assert "s of useful life left (horizon 600 s)" in rul_alarm["message"]
        assert listed["filler-motor-anomaly"]["message"] == "Filler motor vibration is anomalous and it persists"

        # the prediction in the structure of IDTA 02048 (RemainingUsefulLifePrediction), on REST
        wear_url = element_url(rest_url, PREDICTIVE, "FillerMotorWear")
        async with http.get(f"{wear_url}/$value") as response:
            wear = (await response.json())["FillerMotorWear"]
        lifetime = wear["RemainingUsefulLifetime"]["statements"]
        assert (lifetime["IndicationType"], lifetime["EngineeringUnit"], lifetime["StartValue"]) == ("time", "s", 0.0)
        assert lifetime["StartDateTime"] == wear["LastUpdate"]
        start = datetime.fromisoformat(lifetime["StartDateTime"])
        end = datetime.fromisoformat(wear["RemainingUsfulLifeDateTime"])
        assert (end - start).total_seconds() == pytest.approx(lifetime["DurationValue"], abs=1e-5)
        assert wear["RemainingUsefulLifeLower"] <= lifetime["DurationValue"] <= wear["RemainingUsefulLifeUpper"]
        [condition] = wear["ListRULBoundaryConditions"]
        assert (condition["ConditionName"], condition["BoundaryValueRange"]) == ("Vibration", 7.1)
        assert condition["BoundaryEngineeringUnit"] == "mm/s"
        assert wear["PredictionModelInformation"]["ModelType"] == "data-driven methods"
        assert wear["AlertAfterExceedingRemainingUsableLife"]["MaintenanceRequired"] is False
        async with http.get(wear_url) as response:
            element = await response.json()
        semantic_ids = {child["idShort"]: child["semanticId"]["keys"][0]["value"] for child in element["value"]}
        idta = "https://admin-shell.io/idta/PredictiveMaintenance/"
        assert element["semanticId"]["keys"][0]["value"] == f"{idta}RemainingUsefulLifePrediction/1/0"
        assert semantic_ids["RemainingUsefulLifetime"] == f"{idta}RemainingUsefulLifetime/1/0"
        assert semantic_ids["ListRULBoundaryConditions"] == f"{idta}ListRULBoundaryConditions/1/0"

        # the bearing replaced: healthy again, the anomaly no longer persists and its alarm is inactive
        # (unacknowledged, so still listed); the RUL keeps its last estimate until a trend heads up again
        for step in range(4):
            await vibration(2.0 + 0.02 * step)
        found = await eventually(
            lambda: active(http, rest_url), lambda names: "filler-motor-anomaly" not in names, within=5.0
        )
        assert "filler-motor-rul" in found
        assert "filler-motor-anomaly" in await alarms(http, rest_url)
