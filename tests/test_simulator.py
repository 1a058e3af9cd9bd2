"""The simulated bottling line, read through the real Modbus connector and the demo mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aas_server.connectors.modbus import ModbusConnector
from aas_server.devices.bottling_line import BottlingLineSimulator
from aas_server.mapping.engine import MappingEngine
from aas_server.mapping.schema import MappingFile, ModbusTcpDevice, RegisterPoint, Table, load_mapping
from aas_server.model.events import Quality, RawSample
from tests.support import wait_until

DEMO_MAPPING = Path(__file__).resolve().parent.parent / "mappings" / "bottling-line.yaml"


class Hub:
    """What the hub does with a device: a connector feeding the engine, latest value per point."""

    def __init__(self, mapping: MappingFile) -> None:
        self.engine = MappingEngine(mapping)
        self.values: dict[str, list[Any]] = {}
        device = mapping.devices[0]
        assert isinstance(device, ModbusTcpDevice)
        self.connector = ModbusConnector(device, mapping.modbus_points_of(device.name), self.on_sample)

    def on_sample(self, sample: RawSample) -> None:
        change = self.engine.on_sample(sample)
        if change is not None and change.quality is Quality.GOOD:
            self.values.setdefault(sample.point, []).append(change.value)

    def latest(self, name: str) -> Any:
        history = self.values.get(name)
        return history[-1] if history else None

    def distinct(self, name: str) -> set[Any]:
        return set(self.values.get(name, ()))

    async def write(self, name: str, value: Any) -> None:
        await self.connector.write(self.engine.to_raw(name, value))


@pytest.fixture
async def simulated_line() -> AsyncIterator[tuple[BottlingLineSimulator, Hub]]:
    demo = load_mapping(DEMO_MAPPING)
    simulator = BottlingLineSimulator(demo, update_interval=0.05, seed=7)
    async with simulator:
        device = demo.devices[0].model_copy(update={"port": simulator.port})
        mapping = demo.model_copy(update={"devices": [device]})
        hub = Hub(mapping)
        async with hub.connector:
            yield simulator, hub


async def test_the_simulated_line_moves_over_time(simulated_line: tuple[BottlingLineSimulator, Hub]) -> None:
    _, hub = simulated_line
    await wait_until(lambda: len(hub.distinct("filler-motor.RotationalSpeed")) >= 5, within=3.0)
    await wait_until(lambda: (hub.latest("filler-motor.RotationalSpeed") or 0) > 100, within=3.0)
    assert hub.latest("bottling-process.LineRunning") is True
    assert hub.latest("filler-motor.SpeedSetpoint") == 1450.0
    assert hub.latest("filler.FillVolumeSetpoint") == 500.0
    assert 0 < hub.latest("filler-motor.MotorCurrent") < 20
    assert 15 < hub.latest("filler-temperature-sensor.Temperature") < 35
    assert hub.latest("plant.ActivePower") > 1.0
    assert hub.latest("filler.BottlesFilled") >= 1_250_000
    assert isinstance(hub.latest("filler.BottlesFilled"), int)
    assert len(hub.distinct("capper-motor.Vibration")) >= 2
    every_point = {point.name for point in hub.engine.points()}
    await wait_until(lambda: set(hub.values) == every_point, within=3.0)


async def test_counters_and_energy_rise_while_the_line_runs(
    simulated_line: tuple[BottlingLineSimulator, Hub],
) -> None:
    simulator, hub = simulated_line
    await wait_until(lambda: hub.latest("filler.BottlesFilled") is not None, within=3.0)
    bottles, energy = simulator.read_point("filler.BottlesFilled"), simulator.state.energy_consumed
    simulator.step(60.0)  # one simulated minute, on top of the real-time steps
    assert simulator.read_point("filler.BottlesFilled") > bottles + 100
    assert simulator.state.energy_consumed > energy
    await wait_until(lambda: hub.latest("filler.BottlesFilled") > bottles + 100, within=3.0)


async def test_a_setpoint_written_by_a_client_is_obeyed(simulated_line: tuple[BottlingLineSimulator, Hub]) -> None:
    simulator, hub = simulated_line
    await hub.write("capper-motor.SpeedSetpoint", 600.0)
    simulator.step(20.0)  # twenty simulated seconds let the motor settle
    await wait_until(lambda: abs((hub.latest("capper-motor.RotationalSpeed") or 0) - 600.0) < 20, within=3.0)
    await wait_until(lambda: hub.latest("capper-motor.SpeedSetpoint") == 600.0, within=3.0)
    assert simulator.read_point("capper-motor.SpeedSetpoint") == 600.0

    await hub.write("bottling-process.LineRunning", False)
    simulator.step(30.0)
    # Each twin's registers are read by their own request, so wait for all of them to show the stop.
    await wait_until(
        lambda: (
            hub.latest("filler-motor.RotationalSpeed") == 0.0
            and hub.latest("bottling-process.LineRunning") is False
            and hub.latest("bottling-process.Throughput") == 0.0
            and hub.latest("filler.BottlesFilled") == simulator.read_point("filler.BottlesFilled")
        ),
        within=3.0,
    )
    stopped_at = hub.latest("filler.BottlesFilled")
    simulator.step(60.0)
    assert simulator.read_point("filler.BottlesFilled") == stopped_at


async def test_paused_physics_leave_registers_alone(simulated_line: tuple[BottlingLineSimulator, Hub]) -> None:
    simulator, hub = simulated_line
    simulator.pause()
    simulator.write_point("filler-temperature-sensor.Temperature", -12.3)
    await wait_until(lambda: hub.latest("filler-temperature-sensor.Temperature") == -12.3, within=3.0)
    samples = len(hub.values["filler-temperature-sensor.Temperature"])
    await wait_until(lambda: len(hub.values["filler-temperature-sensor.Temperature"]) >= samples + 10, within=3.0)
    assert hub.distinct("filler-temperature-sensor.Temperature") >= {-12.3}
    assert hub.values["filler-temperature-sensor.Temperature"][samples:] == [-12.3] * (
        len(hub.values["filler-temperature-sensor.Temperature"]) - samples
    )
    simulator.resume()
    await wait_until(lambda: hub.latest("filler-temperature-sensor.Temperature") != -12.3, within=3.0)


def test_the_simulator_takes_its_register_layout_from_the_mapping() -> None:
    demo = load_mapping(DEMO_MAPPING)
    moved = [
        point.model_copy(update={"address": point.address + 100})
        if isinstance(point, RegisterPoint) and point.table is Table.HOLDING_REGISTER
        else point
        for point in demo.points
    ]
    simulator = BottlingLineSimulator(demo.model_copy(update={"points": moved}), seed=1)
    assert simulator.read_point("filler-motor.SpeedSetpoint") == 1450.0
    assert simulator.server.get_registers(Table.HOLDING_REGISTER, 102, 2) == (0x44B5, 0x4000)
    assert simulator.server.get_registers(Table.HOLDING_REGISTER, 2, 2) == (0, 0)


async def test_a_register_bit_is_simulated_and_obeyed_without_touching_its_neighbours() -> None:
    demo = load_mapping(DEMO_MAPPING)
    as_bit = [
        RegisterPoint.model_validate(
            {
                **point.model_dump(exclude={"table", "address", "data_type", "poll_interval"}),
                "table": "holding_register",
                "address": 500,
                "data_type": "bool",
                "bit": 13,
                "poll_interval": 0.05,
            }
        )
        if point.name == "bottling-process.LineRunning"
        else point
        for point in demo.points
    ]
    simulator = BottlingLineSimulator(demo.model_copy(update={"points": as_bit}), update_interval=0.05, seed=3)
    simulator.server.set_registers(Table.HOLDING_REGISTER, 500, [0x0101])  # other bits some PLC logic owns
    simulator.write_point("bottling-process.LineRunning", True)
    assert simulator.server.get_registers(Table.HOLDING_REGISTER, 500, 1) == (0x2101,)
    async with simulator:
        device = demo.devices[0].model_copy(update={"port": simulator.port})
        hub = Hub(demo.model_copy(update={"devices": [device], "points": as_bit}))
        async with hub.connector:
            await wait_until(lambda: hub.latest("bottling-process.LineRunning") is True, within=3.0)
            await hub.write("bottling-process.LineRunning", False)
            assert simulator.server.get_registers(Table.HOLDING_REGISTER, 500, 1) == (0x0101,)
            simulator.step(30.0)
            assert simulator.state.line_running is False
            await wait_until(lambda: hub.latest("filler-motor.RotationalSpeed") == 0.0, within=3.0)
            assert simulator.server.request_count(function_code=22) == 1
