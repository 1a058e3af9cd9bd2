"""Errors at run time leave the KPIs serving and are logged once: a fault word the state model cannot
read (2.5 from a device mapped as a float by mistake) is unknown time, one warning, and one note when it
is read again."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from basyx.aas import model

from aas_server.analytics.states import MachineState
from aas_server.model.events import ValueChanged
from aas_server.runtime.kpi import KpiService
from aas_server.store.twin_store import TwinStore
from tests.support import wait_until
from tests.test_kpi_hub import DATA, KPI, MODEL, Clock, machine_store


def float_fault_store() -> TwinStore:
    """The machine of ``test_kpi_hub`` with its fault word mapped as xs:double: a value that is no fault
    code can reach the state model."""
    identifiables = []
    for identifiable in list(machine_store().identifiables()):
        if isinstance(identifiable, model.Submodel) and identifiable.id == DATA:
            fault = identifiable.get_referable("Fault")
            assert isinstance(fault, model.Property)
            identifiable.submodel_element.remove(fault)
            identifiable.submodel_element.add(model.Property("Fault", model.datatypes.Double, value=0.0))
        identifiables.append(identifiable)
    store = TwinStore()
    store.add_all(identifiables)
    return store


async def test_an_unreadable_fault_word_is_unknown_time_logged_once_and_its_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aas_server.runtime.kpi")
    store = float_fault_store()
    start = datetime.now(UTC).replace(microsecond=0)
    clock = Clock(start)

    def feed(seconds: float, **values: Any) -> None:
        for path, value in values.items():
            store.apply(ValueChanged(DATA, path, value, start + timedelta(seconds=seconds), origin="device:plc"))

    async with AsyncExitStack() as stack:
        service = await stack.enter_async_context(KpiService(store, [MODEL], interval=3600, clock=clock))
        recorder = service.recorders[0]
        feed(0, Speed=1450.0)
        await wait_until(lambda: recorder.state[0] is MachineState.RUNNING, what="the machine running")
        feed(600, Fault=2.5)
        feed(601, Speed=1451.0)
        feed(602, Fault=3.5)
        await wait_until(lambda: recorder.state == (MachineState.UNKNOWN, "no data"), what="no data")
        feed(900, Fault=0.0)
        await wait_until(lambda: recorder.state[0] is MachineState.RUNNING, what="running again")
        clock.now = start + timedelta(seconds=1200)
        service.update()

    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == ["KPI signal Fault of urn:test:aas:filler: expected an integer, got 2.5; taken as no data"]
    notes = [record.getMessage() for record in caplog.records if "taken again" in record.getMessage()]
    assert notes == ["KPI signal Fault of urn:test:aas:filler is taken again"]
    # the 300 s without a readable fault word are unknown, as is the hour's time before the start:
    # out of the ratios, and the coverage says so (900 s of 3,600 s observed)
    coverage = store.state(KPI, "LastHour.Coverage")
    availability = store.state(KPI, "LastHour.Availability")
    assert coverage is not None
    assert availability is not None
    assert coverage.value == pytest.approx(900 / 3600)
    assert availability.value == 1.0
