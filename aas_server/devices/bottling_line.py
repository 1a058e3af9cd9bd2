"""A simulated bottling line behind a Modbus TCP server (the demo plant's PLC).

Every ``update_interval`` the plant moves: motor speeds follow their set-points with first-order
inertia plus noise, currents and vibration follow speed, operating hours and bottle counters rise
while the line runs, the filler temperature drifts, active power follows the motors and energy
integrates it. Register addresses and encodings come from the mapping file, through the mapping
engine, so the simulator and the hub's mapping never disagree. Set-points (and ``LineRunning``)
written by Modbus clients are read back every step and obeyed, never overwritten.

The simulator addresses points by name, ``<twin key>.<idShort>`` as in ``mappings/bottling-line.yaml``;
points the mapping lacks are simply not simulated. A ``bool`` on a register bit is set in its
register without touching the other bits.

Faults (``inject_fault(kind)``, ``clear_faults()``) make the demo's rules raise alarms:
``bearing-wear`` (the filler motor's vibration drifts up by ``BEARING_WEAR_RATE`` mm/s per second),
``jam`` (the filler stops: speed 0, no bottles, ``filler.FaultCode`` = ``JAM_FAULT_CODE``),
``temperature-excursion`` (the product temperature rises towards ``EXCURSION_TEMPERATURE``) and
``sensor-stuck`` (the temperature register keeps the value it had when the fault began).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any

from aas_server.devices.modbus_server import ModbusDeviceServer
from aas_server.errors import MappingError
from aas_server.lifecycle import Service, cancel_and_wait
from aas_server.mapping.engine import MappingEngine
from aas_server.mapping.schema import BitPoint, MappingFile, ModbusTcpDevice, RegisterPoint
from aas_server.model.events import Quality, RawSample, utc_now

logger = logging.getLogger(__name__)

_MOTORS = ("filler-motor", "capper-motor")
_NOMINAL_SPEED = 1450.0
_MAXIMUM_SPEED = 3000.0
_NOMINAL_BOTTLES_PER_HOUR = 12000.0

FAULT_KINDS = ("bearing-wear", "jam", "temperature-excursion", "sensor-stuck")
"""The faults the simulator can play, by the name ``aas-server demo --fault`` and InjectFault take."""
JAM_FAULT_CODE = 17
"""``filler.FaultCode`` while the filler is jammed (0: no fault)."""
BEARING_WEAR_RATE = 0.02
"""How fast (mm/s per second) a worn bearing's vibration rises: past the 4.5 mm/s limit in about 2 minutes."""
EXCURSION_TEMPERATURE = 40.0
"""Where the product temperature heads during an excursion (above the demo rules' 35 °C HighHigh)."""


@dataclass(slots=True)
class _Motor:
    speed: float = 0.0
    setpoint: float = 0.0
    current: float = 0.0
    vibration: float = 0.0
    operating_hours: float = 0.0


@dataclass(slots=True)
class PlantState:
    """The simulated plant's engineering values (units as in the demo mapping)."""

    motors: dict[str, _Motor] = field(default_factory=lambda: {name: _Motor() for name in _MOTORS})
    line_running: bool = True
    temperature: float = 22.0
    fill_volume_setpoint: float = 500.0
    cap_torque_setpoint: float = 2.5
    bottles_filled: float = 0.0
    bottles_capped: float = 0.0
    rejected_bottles: float = 0.0
    throughput: float = 0.0
    active_power: float = 0.0
    energy_consumed: float = 0.0
    faults: set[str] = field(default_factory=set)
    bearing_wear: float = 0.0
    """Extra vibration (mm/s) of the filler motor's worn bearing."""
    stuck_temperature: float | None = None
    """What the temperature register shows while the sensor is stuck."""


class BottlingLineSimulator(Service):
    """The demo bottling line's PLC: a ``ModbusDeviceServer`` whose registers follow simulated physics."""

    def __init__(
        self,
        mapping: MappingFile,
        device_name: str = "bottling-plc",
        host: str = "127.0.0.1",
        port: int = 0,
        update_interval: float = 0.2,
        seed: int | None = None,
    ) -> None:
        if update_interval <= 0:
            raise ValueError("update_interval must be positive")
        device = mapping.device(device_name)
        if not isinstance(device, ModbusTcpDevice):
            raise MappingError(f"device {device_name!r} speaks {device.protocol}; the simulator is a Modbus TCP device")
        self.device = device
        points = mapping.modbus_points_of(device_name)
        self.engine = MappingEngine(mapping.model_copy(update={"points": points, "devices": [device]}))
        self._points: dict[str, RegisterPoint | BitPoint] = {point.name: point for point in points}
        unit_ids = {self.device.point_unit_id(point) for point in self._points.values()} or {self.device.unit_id}
        highest = max(
            (self.device.wire_address(point) + point.register_count for point in self._points.values()), default=0
        )
        size = min(65536, max(1024, (highest + 15) // 16 * 16))
        self.server = ModbusDeviceServer(host, port, unit_ids=sorted(unit_ids), size=size)
        self.update_interval = update_interval
        self.running_physics = True
        """While false the registers are left alone (tests set a register and read it back)."""
        self.state = PlantState()
        self._random = random.Random(seed)
        self._task: asyncio.Task[None] | None = None
        self._initialise()

    @property
    def port(self) -> int:
        return self.server.port

    def pause(self) -> None:
        """Freeze the physics: no register is written until ``resume()``."""
        self.running_physics = False

    def resume(self) -> None:
        self.running_physics = True

    def inject_fault(self, kind: str) -> None:
        """Start the fault ``kind`` (one of ``FAULT_KINDS``); a fault already active stays as it is."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        state = self.state
        if kind == "sensor-stuck" and kind not in state.faults:
            state.stuck_temperature = state.temperature
        state.faults.add(kind)
        logger.info("simulated fault %s injected", kind)

    def clear_faults(self) -> None:
        """End every fault: the plant recovers with its usual inertia."""
        state = self.state
        state.faults.clear()
        state.bearing_wear = 0.0
        state.stuck_temperature = None
        logger.info("simulated faults cleared")

    @property
    def faults(self) -> tuple[str, ...]:
        """The active faults, in ``FAULT_KINDS`` order."""
        return tuple(kind for kind in FAULT_KINDS if kind in self.state.faults)

    async def start(self) -> None:
        """Start the Modbus server and the physics."""
        await self.server.start()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="bottling line simulator")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self.server.stop()

    # --- registers -----------------------------------------------------------------------------

    def has_point(self, name: str) -> bool:
        return name in self._points

    def write_point(self, name: str, value: Any) -> None:
        """Put an engineering value into the point's registers (rounded to its resolution)."""
        point = self._points.get(name)
        if point is None:
            return
        address, unit_id = self.device.wire_address(point), self.device.point_unit_id(point)
        if isinstance(point, RegisterPoint) and point.bit is not None:
            self.server.set_register_bit(point.table, address, point.bit, bool(value), unit_id)
            return
        self.server.set_raw(point.table, address, self.engine.encode_value(name, value), unit_id)

    def read_point(self, name: str) -> Any:
        """The engineering value the point's registers hold now, ``None`` if undecodable or unmapped."""
        point = self._points.get(name)
        if point is None:
            return None
        raw = self.server.get_raw(
            point.table, self.device.wire_address(point), point.register_count, self.device.point_unit_id(point)
        )
        change = self.engine.decode_sample(RawSample(self.device.name, name, raw, utc_now()))
        return change.value if change.quality is not Quality.BAD else None

    def _initialise(self) -> None:
        state = self.state
        state.motors["filler-motor"].setpoint = _NOMINAL_SPEED
        state.motors["filler-motor"].operating_hours = 12345.6
        state.motors["capper-motor"].setpoint = 1200.0
        state.motors["capper-motor"].operating_hours = 9876.5
        state.bottles_filled = 1_250_000
        state.bottles_capped = 1_249_950
        state.rejected_bottles = 1_830
        state.energy_consumed = 53_210.0
        for motor_name, motor in state.motors.items():
            self.write_point(f"{motor_name}.SpeedSetpoint", motor.setpoint)
        self.write_point("filler.FillVolumeSetpoint", state.fill_volume_setpoint)
        self.write_point("capper.CapTorqueSetpoint", state.cap_torque_setpoint)
        self.write_point("bottling-process.LineRunning", state.line_running)
        self._publish()

    def _read_setpoints(self) -> None:
        state = self.state
        for motor_name, motor in state.motors.items():
            value = self.read_point(f"{motor_name}.SpeedSetpoint")
            if isinstance(value, int | float) and math.isfinite(value):
                motor.setpoint = min(max(float(value), 0.0), _MAXIMUM_SPEED)
        running = self.read_point("bottling-process.LineRunning")
        if isinstance(running, bool):
            state.line_running = running
        fill_volume = self.read_point("filler.FillVolumeSetpoint")
        if isinstance(fill_volume, int | float):
            state.fill_volume_setpoint = float(fill_volume)
        torque = self.read_point("capper.CapTorqueSetpoint")
        if isinstance(torque, int | float) and math.isfinite(torque):
            state.cap_torque_setpoint = float(torque)

    def _publish(self) -> None:
        state = self.state
        for motor_name, motor in state.motors.items():
            self.write_point(f"{motor_name}.RotationalSpeed", motor.speed)
            self.write_point(f"{motor_name}.MotorCurrent", motor.current)
            self.write_point(f"{motor_name}.Vibration", motor.vibration)
            self.write_point(f"{motor_name}.OperatingHours", motor.operating_hours)
        shown = state.stuck_temperature if state.stuck_temperature is not None else state.temperature
        self.write_point("filler-temperature-sensor.Temperature", shown)
        self.write_point("filler.FaultCode", JAM_FAULT_CODE if "jam" in state.faults else 0)
        self.write_point("filler.BottlesFilled", math.floor(state.bottles_filled))
        self.write_point("capper.BottlesCapped", math.floor(state.bottles_capped))
        self.write_point("bottling-process.RejectedBottles", math.floor(state.rejected_bottles))
        self.write_point("bottling-process.Throughput", state.throughput)
        self.write_point("plant.ActivePower", state.active_power)
        self.write_point("plant.EnergyConsumed", state.energy_consumed)

    # --- physics -------------------------------------------------------------------------------

    def step(self, elapsed: float) -> None:
        """Advance the plant by ``elapsed`` seconds: read set-points, move, write the registers."""
        if elapsed <= 0:
            return
        self._read_setpoints()
        state = self.state
        noise = self._random.gauss
        follow = 1 - math.exp(-elapsed / 1.0)
        power = 1.2
        faults = state.faults
        if "bearing-wear" in faults:
            state.bearing_wear += BEARING_WEAR_RATE * elapsed
        for motor_name, motor in state.motors.items():
            jammed = motor_name == "filler-motor" and "jam" in faults
            target = motor.setpoint if state.line_running and not jammed else 0.0
            if jammed:
                motor.speed = 0.0
            motor.speed += (target - motor.speed) * follow
            if motor.speed > 1.0:
                motor.speed = max(0.0, motor.speed + noise(0.0, 1.5))
                motor.operating_hours += elapsed / 3600
            else:
                motor.speed = 0.0
            load = motor.speed / _NOMINAL_SPEED
            motor.current = max(0.0, (0.9 + 6.2 * load + noise(0.0, 0.04)) if motor.speed > 0 else 0.0)
            motor.vibration = max(0.0, 0.4 + 1.8 * load + noise(0.0, 0.08)) if motor.speed > 0 else 0.05
            if motor_name == "filler-motor":
                motor.vibration += state.bearing_wear
            power += math.sqrt(3) * 400.0 * motor.current * 0.85 / 1000.0
        filler_speed = state.motors["filler-motor"].speed
        rate = _NOMINAL_BOTTLES_PER_HOUR * filler_speed / _NOMINAL_SPEED if state.line_running else 0.0
        state.throughput = max(0.0, rate + noise(0.0, 25.0)) if rate > 0 else 0.0
        filled = rate * elapsed / 3600
        state.bottles_filled += filled
        state.bottles_capped = max(state.bottles_capped, state.bottles_filled - 3)
        state.rejected_bottles += filled * 0.0015
        ambient = 24.0 if state.line_running else 21.5
        settle = 600.0
        if "temperature-excursion" in faults:
            ambient, settle = EXCURSION_TEMPERATURE, 5.0
        state.temperature += (ambient - state.temperature) * (1 - math.exp(-elapsed / settle)) + noise(0.0, 0.02)
        state.active_power = power + noise(0.0, 0.05)
        state.energy_consumed += state.active_power * elapsed / 3600
        self._publish()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.update_interval)
            now = loop.time()
            elapsed, last = now - last, now
            if self.running_physics:
                try:
                    self.step(elapsed)
                except Exception:
                    logger.exception("bottling line simulation step failed")
