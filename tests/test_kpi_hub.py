"""OEE and ISO 22400-2 KPIs written into the twin: a machine driven through running, down (jam) and idle,
its KPI submodel read over REST and checked against the hand computation; KPI files checked."""

from __future__ import annotations

import subprocess
import sys
from contextlib import AsyncExitStack
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from basyx.aas import model

from aas_server.analytics.states import (
    CounterSpec,
    FaultWord,
    MachineState,
    MachineStateModel,
    Shift,
    ShiftCalendar,
    SignalRef,
    SpeedSignal,
)
from aas_server.api.app import create_app
from aas_server.api.serialization import encode_identifier
from aas_server.config import HubSettings
from aas_server.errors import ConfigurationError
from aas_server.model.events import Quality, ValueChanged
from aas_server.model.twins import build_environment, load_twins
from aas_server.runtime.hub import Hub
from aas_server.runtime.kpi import KPI_SEMANTIC_IDS, KpiRollup, KpiService, load_kpi_file, start_kpis
from aas_server.store.twin_store import TwinStore
from tests.support import ROOT, eventually, wait_until
from tests.test_end_to_end import element_url, settings_for

Client = TestClient[web.Request, web.Application]

SHELL = "urn:test:aas:filler"
DATA = "urn:test:sm:filler:operational-data"
KPI = f"{SHELL}/kpi"


def machine_store() -> TwinStore:
    data = model.Submodel(
        DATA,
        id_short="OperationalData",
        submodel_element=[
            model.Property("Speed", model.datatypes.Double, value=0.0),
            model.Property("Fault", model.datatypes.Int, value=0),
            model.Property("Produced", model.datatypes.UnsignedInt, value=100),
            model.Property("Scrap", model.datatypes.UnsignedInt, value=1),
        ],
    )
    shell = model.AssetAdministrationShell(
        model.AssetInformation(model.AssetKind.INSTANCE, global_asset_id="urn:test:asset:filler"),
        SHELL,
        id_short="Filler",
        submodel={model.ModelReference.from_referable(data)},
    )
    others = [
        model.AssetAdministrationShell(
            model.AssetInformation(model.AssetKind.INSTANCE, global_asset_id=f"urn:test:asset:{key}"),
            f"urn:test:aas:{key}",
            id_short=key.capitalize(),
        )
        for key in ("twin", "line")
    ]
    store = TwinStore()
    store.add_all([shell, data, *others])
    return store


def signal(path: str) -> SignalRef:
    return SignalRef(submodel_id=DATA, id_short_path=path)


MODEL = MachineStateModel(
    asset=SHELL,
    calendar=ShiftCalendar(shifts=(Shift(name="day", start=time(0), end=time(0)),)),
    ideal_cycle_time=0.5,
    speed=SpeedSignal(signal=signal("Speed"), running_above=100.0),
    fault=FaultWord(signal=signal("Fault"), reasons={17: "jam"}),
    produced=CounterSpec(signal=signal("Produced")),
    scrap=CounterSpec(signal=signal("Scrap")),
)


TWIN = "urn:test:aas:twin"
"""A second machine read from the same signals: the line's roll-up sums two equal machines."""
LINE = "urn:test:aas:line"
ROLLUP = KpiRollup(shell=LINE, parts=[SHELL, TWIN])


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_the_kpis_of_a_running_jammed_and_idle_machine_are_read_over_rest() -> None:
    store = machine_store()
    start = datetime.now(UTC).replace(microsecond=0)
    clock = Clock(start)

    def feed(seconds: float, **values: Any) -> None:
        for path, value in values.items():
            change = ValueChanged(DATA, path, value, start + timedelta(seconds=seconds), origin="device:plc")
            store.apply(change)

    def url(path: str) -> str:
        return f"/api/v3.0/submodels/{encode_identifier(KPI)}/submodel-elements/{path}/$value"

    async with AsyncExitStack() as stack:
        models = [MODEL, MODEL.model_copy(update={"asset": TWIN})]
        service = await stack.enter_async_context(
            KpiService(store, models, interval=0.05, clock=clock, rollups=[ROLLUP])
        )
        client: Client = await stack.enter_async_context(TestClient(TestServer(create_app(store))))
        # the counters' values at start (100 bottles, 1 scrapped) count as their first values, not as parts
        feed(0, Speed=1450.0)
        feed(1200, Produced=2100, Fault=17)  # 2000 bottles, then the filler jams for 5 minutes
        feed(1500, Fault=0)
        feed(2400, Produced=3500, Scrap=69, Speed=0.0)  # 1400 more, 68 of all scrapped; then starved
        clock.now = start + timedelta(seconds=3000)

        async def last_hour() -> dict[str, Any]:
            values: dict[str, Any] = {}
            for id_short in KPI_SEMANTIC_IDS:
                response = await client.get(url(f"LastHour.{id_short}"))
                assert response.status == 200, await response.text()
                values[id_short] = (await response.json())[id_short]
            return values

        # the window [now - 1 h, now): 600 s before the service started (unknown), 2100 s running,
        # 300 s down (jam), 600 s idle
        # the bus keeps the order: once the stop after the last parts is taken, every sample is
        recorder = service.recorders[1]
        await wait_until(
            lambda: len(recorder.increments) == 3 and recorder.state[0] is MachineState.IDLE,
            what="the last sample taken",
        )
        service.update()  # every later computation gives the same values: the clock stands still
        values = await last_hour()
        assert values["ProducedQuantity"] == 3400
        assert values["Availability"] == pytest.approx(2100 / 3000)
        assert values["Performance"] == pytest.approx(0.5 * 3400 / 2100)
        assert values["QualityRatio"] == pytest.approx(3332 / 3400)
        assert values["OEE"] == pytest.approx(2100 / 3000 * (0.5 * 3400 / 2100) * (3332 / 3400))
        assert values["GoodQuantity"] == 3332
        assert values["FailureEvents"] == 1
        assert values["MTBF"] == pytest.approx(2100.0)
        assert values["MTTR"] == pytest.approx(300.0)
        assert values["ActualProductionTime"] == pytest.approx(2100.0)
        assert values["ActualDowntime"] == pytest.approx(300.0)
        assert values["Coverage"] == pytest.approx(3000 / 3600)
        assert orjson.loads(values["DowntimeByReason"]) == {"jam": 300.0}

        # the same ratios over the last 24 h (the shift lasts all day): only the coverage differs
        response = await client.get(url("Last24Hours.Availability"))
        assert (await response.json())["Availability"] == pytest.approx(2100 / 3000)
        response = await client.get(url("Last24Hours.Coverage"))
        assert (await response.json())["Coverage"] == pytest.approx(3000 / (24 * 3600))

        # KPIs are computed values: a client cannot write them
        refused = await client.patch(url("LastHour.OEE"), json=1.0)
        assert refused.status == 403, await refused.text()
        assert "kpi:iso22400" in await refused.text()

        # the shell refers to its KPI submodel, with the ISO 22400 semanticIds
        assert any(reference.key[-1].value == KPI for reference in store.shell(SHELL).submodel)
        element = store.element(KPI, "LastHour.OEE")
        assert isinstance(element, model.Property)
        assert element.semantic_id is not None
        assert element.semantic_id.key[0].value == KPI_SEMANTIC_IDS["OEE"]
        assert service.recorders[0].late_samples == 0

        # the line: times and quantities of both machines summed, the ratios recomputed from the sums
        async def line(id_short: str) -> Any:
            path = (
                f"/api/v3.0/submodels/{encode_identifier(LINE + '/kpi')}/submodel-elements/LastHour.{id_short}/$value"
            )
            response = await client.get(path)
            assert response.status == 200, await response.text()
            return (await response.json())[id_short]

        assert await line("ProducedQuantity") == 6800
        assert await line("FailureEvents") == 2
        assert await line("Availability") == pytest.approx(2100 / 3000)
        assert await line("OEE") == pytest.approx(values["OEE"])
        assert await line("MTBF") == pytest.approx(2100.0)
        assert orjson.loads(await line("DowntimeByReason")) == {"jam": 600.0}


async def test_a_window_without_a_denominator_is_bad_quality_not_a_fake_zero() -> None:
    store = machine_store()
    clock = Clock(datetime.now(UTC))
    async with KpiService(store, [MODEL], interval=60, clock=clock):
        state = store.state(KPI, "LastHour.OEE")
        assert state is not None
        assert state.quality is Quality.BAD  # no signal seen yet: nothing observed, no OEE
        assert state.value is None


async def test_a_kpi_file_naming_a_missing_signal_or_shell_is_refused_with_its_place(tmp_path: Path) -> None:
    store = machine_store()
    broken = MODEL.model_copy(update={"produced": CounterSpec(signal=signal("Bottles"))})
    with pytest.raises(ConfigurationError, match=r"kpi\.yaml: assets\[0\]: produced 'Bottles'"):
        KpiService(store, [broken], where=str(tmp_path / "kpi.yaml"))
    with pytest.raises(ConfigurationError, match=r"rollups\[0\]\.parts\[1\]: 'urn:test:aas:twin' is no asset"):
        KpiService(store, [MODEL], rollups=[ROLLUP])
    path = tmp_path / "kpi.yaml"
    path.write_text(yaml.safe_dump({"assets": [{"asset": SHELL, "ideal_cycle_time": -1}]}), encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"kpi\.yaml: assets\.0\.calendar"):
        load_kpi_file(path)


async def test_the_demo_kpi_file_fits_the_demo_plant() -> None:
    demo = ROOT / "examples" / "bottling-line"
    store = TwinStore()
    store.add_all(build_environment(load_twins(demo / "plant.yaml")))
    settings = HubSettings().model_copy(
        update={"analytics": HubSettings().analytics.model_copy(update={"kpi_files": [demo / "kpi.yaml"]})}
    )
    async with AsyncExitStack() as stack:
        service = await start_kpis(stack, settings, store)
        assert service is not None
        assert {item.asset for item in service.models} == {
            "urn:aas-server:demo:aas:filler",
            "urn:aas-server:demo:aas:capper",
        }
        assert [rollup.shell for rollup in service.rollups] == [
            "urn:aas-server:demo:aas:bottling-process",
            "urn:aas-server:demo:aas:plant",
        ]
        for shell in ("filler", "capper", "bottling-process", "plant"):
            assert store.state(f"urn:aas-server:demo:aas:{shell}/kpi", "CurrentShift.OEE") is not None


# --- the hub: the demo plant's Modbus device drives the filler's KPIs ------------------------------

FILLER_MOTOR = "urn:aas-server:demo:sm:filler-motor:operational-data"
FILLER = "urn:aas-server:demo:sm:filler:operational-data"
FILLER_KPI = "urn:aas-server:demo:aas:filler/kpi"


def demo_kpi_settings(tmp_path: Path) -> HubSettings:
    kpi_file = tmp_path / "kpi.yaml"
    filler = {
        "asset": "urn:aas-server:demo:aas:filler",
        "ideal_cycle_time": 0.3,
        "calendar": {"shifts": [{"name": "all-day", "start": "00:00:00", "end": "00:00:00"}]},
        "speed": {"signal": {"submodel_id": FILLER_MOTOR, "id_short_path": "RotationalSpeed"}, "running_above": 100.0},
        "produced": {"signal": {"submodel_id": FILLER, "id_short_path": "BottlesFilled"}},
    }
    kpi_file.write_text(yaml.safe_dump({"assets": [filler]}), encoding="utf-8")
    base = settings_for(tmp_path / "data")
    return base.model_copy(
        update={
            "opcua": base.opcua.model_copy(update={"enabled": False}),
            "analytics": base.analytics.model_copy(update={"kpi_files": [kpi_file], "kpi_interval": 0.1}),
        }
    )


async def test_the_hub_writes_the_filler_kpis_from_its_modbus_device_into_its_shell(tmp_path: Path) -> None:
    async with Hub(demo_kpi_settings(tmp_path)) as hub, aiohttp.ClientSession() as http:
        assert hub.simulator is not None
        assert hub.kpis is not None
        assert hub.rest_url is not None
        simulator, recorder, rest_url = hub.simulator, hub.kpis.recorders[0], hub.rest_url

        async def device(point: str, submodel: str, path: str, value: Any) -> None:
            simulator.write_point(point, value)
            await wait_until(
                lambda: (state := hub.store.state(submodel, path)) is not None and state.value == value,
                within=5.0,
                what=f"{path} = {value}",
            )

        async def kpi(path: str) -> Any:
            async with http.get(f"{element_url(rest_url, FILLER_KPI, path)}/$value") as response:
                assert response.status == 200, await response.text()
                return (await response.json())[path.rsplit(".", 1)[-1]]

        simulator.pause()
        await device("filler-motor.RotationalSpeed", FILLER_MOTOR, "RotationalSpeed", 1450.0)
        await device("filler.BottlesFilled", FILLER, "BottlesFilled", 5000)
        await device("filler-motor.RotationalSpeed", FILLER_MOTOR, "RotationalSpeed", 0.0)
        # the bus keeps the order: once the stop is seen, the counter value before it was too
        await wait_until(lambda: recorder.state[0] is MachineState.IDLE, within=5.0, what="the filler idle")
        hub.kpis.update()
        before = await kpi("LastHour.ProducedQuantity")
        await device("filler.BottlesFilled", FILLER, "BottlesFilled", 5120)
        assert await eventually(lambda: kpi("LastHour.ProducedQuantity"), lambda found: found == before + 120)
        availability = await eventually(lambda: kpi("LastHour.Availability"), lambda found: 0 < found < 1)
        assert await kpi("CurrentShift.ProducedQuantity") == before + 120
        assert availability == pytest.approx(await kpi("Last24Hours.Availability"), abs=0.05)


# --- aas-server check ------------------------------------------------------------------------------


def _check(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aas_server", "check", *map(str, files)], capture_output=True, text=True, timeout=120
    )


def test_check_takes_the_demo_kpi_file_and_refuses_settings_whose_kpis_read_a_missing_signal(tmp_path: Path) -> None:
    demo_kpi = ROOT / "examples" / "bottling-line" / "kpi.yaml"
    accepted = _check(demo_kpi)
    assert accepted.returncode == 0, accepted.stderr
    assert "KPI file ok (2 assets, 2 roll-ups" in accepted.stdout

    kpi = yaml.safe_load(demo_kpi.read_text(encoding="utf-8"))
    kpi["assets"][1]["produced"]["signal"]["id_short_path"] = "BottlesCaped"
    kpi_file = tmp_path / "kpi.yaml"
    kpi_file.write_text(yaml.safe_dump(kpi), encoding="utf-8")
    demo = yaml.safe_load((ROOT / "examples" / "bottling-line" / "hub.yaml").read_text(encoding="utf-8"))
    demo["twins"] = [str(ROOT / "examples" / "bottling-line" / "plant.yaml")]
    demo["mappings"] = [str(ROOT / "mappings" / "bottling-line.yaml")]
    demo["data_dir"] = str(tmp_path / "data")
    demo["analytics"] = {"kpi_files": [str(kpi_file)]}
    settings_file = tmp_path / "hub.yaml"
    settings_file.write_text(yaml.safe_dump(demo), encoding="utf-8")
    refused = _check(settings_file)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"{kpi_file}: assets[1]: produced 'BottlesCaped'" in refused.stderr


async def test_a_counter_value_before_the_device_first_answered_is_no_baseline(tmp_path: Path) -> None:
    """The twin file's 0 for BottlesFilled must not make the simulator's 1,250,000 count as production."""
    async with Hub(demo_kpi_settings(tmp_path)) as hub, aiohttp.ClientSession() as http:
        assert hub.simulator is not None
        assert hub.kpis is not None
        assert hub.rest_url is not None
        store, kpis, rest_url = hub.store, hub.kpis, hub.rest_url
        await wait_until(
            lambda: (state := store.state(FILLER, "BottlesFilled")) is not None and state.quality is Quality.GOOD,
            within=5.0,
            what="the filler's bottle counter read from the device",
        )
        hub.simulator.pause()
        first_reading = store.state(FILLER, "BottlesFilled")
        assert first_reading is not None
        assert first_reading.value >= 1_000_000
        kpis.update()
        async with http.get(f"{element_url(rest_url, FILLER_KPI, 'LastHour.ProducedQuantity')}/$value") as response:
            assert response.status == 200, await response.text()
            produced = (await response.json())["ProducedQuantity"]
        assert produced is None or produced < 1_000, f"the device's whole counter counted as production: {produced}"
