"""Bad analytics input is refused at load with its place, by the hub's start and by ``aas-server check``:
a rule on an element that does not exist, a threshold of the wrong type (rules, KPI and predictive
settings), a cycle of derived values (roll-ups, KPI roll-ups). Rules on the hub's own derived values
(KPIs, predictive results) are valid input and are accepted by both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from aas_server.config import HubSettings, PredictiveSettings, RollupSettings
from aas_server.errors import ConfigurationError
from aas_server.runtime.hub import Hub
from tests.support import ROOT, wait_until
from tests.test_end_to_end import SENSOR, settings_for

DEMO = ROOT / "examples" / "bottling-line"
FILLER_MOTOR = "urn:aas-server:demo:sm:filler-motor:operational-data"
PLANT = "urn:aas-server:demo:sm:plant:operational-data"
PROCESS = "urn:aas-server:demo:sm:bottling-process:operational-data"
TEMPERATURE_RULE: dict[str, Any] = {
    "name": "hot",
    "kind": "limits",
    "element": {"submodel": SENSOR, "path": "Temperature"},
    "hi": 30.0,
    "severity": 500,
    "message": "hot: {value}",
}


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def with_analytics(tmp_path: Path, **analytics: Any) -> HubSettings:
    base = settings_for(tmp_path / "data")
    return base.model_copy(
        update={
            "opcua": base.opcua.model_copy(update={"enabled": False}),
            "analytics": base.analytics.model_copy(update=analytics),
        }
    )


async def refused(settings: HubSettings) -> str:
    with pytest.raises(ConfigurationError) as raised:
        async with Hub(settings):
            pass
    return str(raised.value)


def check(tmp_path: Path, **changes: Any) -> subprocess.CompletedProcess[str]:
    """``aas-server check`` of the demo settings with ``changes`` (paths made absolute)."""
    demo = yaml.safe_load((DEMO / "hub.yaml").read_text(encoding="utf-8"))
    demo["twins"] = [str(DEMO / "plant.yaml")]
    demo["mappings"] = [str(ROOT / "mappings" / "bottling-line.yaml")]
    demo["data_dir"] = str(tmp_path / "data")
    demo["analytics"]["rules_files"] = [str(DEMO / "rules.yaml")]
    demo["analytics"]["kpi_files"] = [str(DEMO / "kpi.yaml")]
    demo.update(changes)
    settings_file = write_yaml(tmp_path / "hub.yaml", demo)
    return subprocess.run(
        [sys.executable, "-m", "aas_server", "check", str(settings_file)], capture_output=True, text=True, timeout=120
    )


# --- a rule on an element that does not exist, a threshold of the wrong type -----------------------


async def test_the_hub_refuses_a_rule_on_a_missing_element_naming_file_rule_and_field(tmp_path: Path) -> None:
    rules = write_yaml(
        tmp_path / "rules.yaml", {"rules": [dict(TEMPERATURE_RULE, element={"submodel": SENSOR, "path": "Temp"})]}
    )
    message = await refused(with_analytics(tmp_path, rules_files=[rules]))
    assert f"{rules}: rules[0] (hot).element: no element 'Temp' in submodel '{SENSOR}'" in message


async def test_the_hub_refuses_a_rule_threshold_of_the_wrong_type(tmp_path: Path) -> None:
    rules = write_yaml(tmp_path / "rules.yaml", {"rules": [dict(TEMPERATURE_RULE, hi="thirty")]})
    message = await refused(with_analytics(tmp_path, rules_files=[rules]))
    assert f"{rules}: rules[0] (hot).hi: Input should be a valid number" in message


async def test_the_hub_refuses_a_wear_threshold_of_the_wrong_type(tmp_path: Path) -> None:
    signal = {"submodel_id": FILLER_MOTOR, "id_short_path": "Vibration"}
    predictive = PredictiveSettings(wear=[{"name": "Wear", "signal": signal, "failure_threshold": "high"}])
    message = await refused(with_analytics(tmp_path, predictive=predictive))
    assert "analytics.predictive.wear[0].failure_threshold: Input should be a valid number" in message


async def test_the_hub_refuses_a_kpi_speed_threshold_of_the_wrong_type(tmp_path: Path) -> None:
    kpi = yaml.safe_load((DEMO / "kpi.yaml").read_text(encoding="utf-8"))
    kpi["assets"][0]["speed"]["running_above"] = "fast"
    kpi_file = write_yaml(tmp_path / "kpi.yaml", kpi)
    message = await refused(with_analytics(tmp_path, kpi_files=[kpi_file]))
    assert f"{kpi_file}: assets.0.speed.running_above: Input should be a valid number" in message


# --- cycles of derived values ------------------------------------------------------------------------


def cycle() -> list[RollupSettings]:
    """The line's bottles from the plant's, the plant's from the line's."""
    return [
        RollupSettings.model_validate(
            {"target": {"submodel": PROCESS, "path": "BottlesProduced"}, "function": "sum",
             "parts": [{"submodel": PLANT, "path": "BottlesProduced"}]}
        ),
        RollupSettings.model_validate(
            {"target": {"submodel": PLANT, "path": "BottlesProduced"}, "function": "sum",
             "parts": [{"submodel": PROCESS, "path": "BottlesProduced"}]}
        ),
    ]  # fmt: skip


async def test_the_hub_refuses_a_cycle_of_roll_ups_naming_the_roll_ups_on_it(tmp_path: Path) -> None:
    settings = with_analytics(tmp_path).model_copy(update={"rollups": cycle()})
    message = await refused(settings)
    assert "roll-ups form a cycle: rollups[0] -> rollups[1] -> rollups[0]" in message


def test_check_refuses_a_cycle_of_roll_ups_with_exit_2(tmp_path: Path) -> None:
    rollups = [item.model_dump(mode="json") for item in cycle()]
    result = check(tmp_path, rollups=rollups)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "roll-ups form a cycle: rollups[0] -> rollups[1] -> rollups[0]" in result.stderr


@pytest.mark.parametrize(
    ("parts", "where"),
    [
        (["urn:aas-server:demo:aas:bottling-process"], "rollups[0].parts[0]"),  # itself
        (["urn:aas-server:demo:aas:filler", "urn:aas-server:demo:aas:plant"], "rollups[0].parts[1]"),  # later
    ],
)
async def test_the_hub_refuses_kpi_roll_ups_that_would_form_a_cycle(
    tmp_path: Path, parts: list[str], where: str
) -> None:
    kpi = yaml.safe_load((DEMO / "kpi.yaml").read_text(encoding="utf-8"))
    kpi["rollups"][0]["parts"] = parts
    kpi_file = write_yaml(tmp_path / "kpi.yaml", kpi)
    message = await refused(with_analytics(tmp_path, kpi_files=[kpi_file]))
    assert f"{kpi_file}: {where}" in message
    assert "is no asset nor a roll-up listed before" in message


# --- rules on the hub's own derived values are valid ------------------------------------------------

DERIVED_RULES = {
    "rules": [
        {
            "name": "filler-oee-low",
            "kind": "limits",
            "element": {"submodel": "urn:aas-server:demo:aas:filler/kpi", "path": "LastHour.OEE"},
            "lo": 0.6,
            "severity": 400,
            "message": "Filler OEE over the last hour is {value:.2f}",
        },
        {
            "name": "filler-motor-rul",
            "kind": "limits",
            "element": {
                "submodel": "urn:aas-server:demo:aas:filler-motor/predictive-maintenance",
                "path": "FillerMotorWear.RemainingUsefulLifetime.DurationValue",
            },
            "lo": 600.0,
            "severity": 700,
            "message": "{value:.0f} s of useful life left",
        },
    ]
}


async def test_rules_on_kpis_and_predictive_results_are_accepted_by_the_hub_and_by_check(tmp_path: Path) -> None:
    rules = write_yaml(tmp_path / "derived-rules.yaml", DERIVED_RULES)
    settings = with_analytics(tmp_path, rules_files=[DEMO / "rules.yaml", rules], kpi_files=[DEMO / "kpi.yaml"])
    async with Hub(settings) as hub:
        assert hub.alarms is not None
        assert {"filler-oee-low", "filler-motor-rul"} <= {alarm.name for alarm in hub.alarms.alarms()}
    result = check(tmp_path, analytics={
        "rules_files": [str(DEMO / "rules.yaml"), str(rules)],
        "kpi_files": [str(DEMO / "kpi.yaml")],
        "predictive": yaml.safe_load((DEMO / "hub.yaml").read_text(encoding="utf-8"))["analytics"]["predictive"],
    })  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


async def test_a_roll_up_may_use_kpis_the_worst_oee_of_the_machines(tmp_path: Path) -> None:
    twins = yaml.safe_load((DEMO / "plant.yaml").read_text(encoding="utf-8"))
    plant = next(twin for twin in twins["twins"] if twin["key"] == "plant")
    worst_oee = {"id_short": "WorstOEE", "value_type": "xs:double", "semantic_id": "urn:test:WorstOEE", "value": 0.0}
    plant["operational_data"].append(worst_oee)
    twin_file = write_yaml(tmp_path / "plant.yaml", twins)
    worst = RollupSettings.model_validate(
        {
            "target": {"submodel": PLANT, "path": "WorstOEE"},
            "function": "minimum",
            "parts": [
                {"submodel": f"urn:aas-server:demo:aas:{machine}/kpi", "path": "LastHour.OEE"}
                for machine in ("filler", "capper")
            ],
        }
    )
    base = with_analytics(tmp_path, kpi_files=[DEMO / "kpi.yaml"], kpi_interval=0.1)
    settings = base.model_copy(update={"twins": [twin_file], "rollups": [*base.rollups, worst]})
    async with Hub(settings) as hub:

        def computed() -> bool:
            target = hub.store.state(PLANT, "WorstOEE")
            parts = [hub.store.state(f"urn:aas-server:demo:aas:{m}/kpi", "LastHour.OEE") for m in ("filler", "capper")]
            values = [part.value for part in parts if part is not None and part.value is not None]
            return target is not None and len(values) == 2 and target.value == min(values)

        await wait_until(computed, within=20.0, what="the worst OEE of filler and capper")
    result = check(
        tmp_path,
        twins=[str(twin_file)],
        rollups=[item.model_dump(mode="json") for item in settings.rollups],
    )
    assert result.returncode == 0, result.stdout + result.stderr
