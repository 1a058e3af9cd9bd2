"""A detector that fails at run time leaves the twin serving and is logged once, and its recovery once.

No sample the demo device can send makes river's detector raise, so this is a fault we cannot cause:
the test swaps one detector for one whose update raises (the only fake here); the hub, its Modbus
device, the store and REST are real."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aas_server.runtime.hub import Hub
from tests.support import wait_until
from tests.test_end_to_end import SENSOR, element_url
from tests.test_predictive_hub import predictive_settings, set_temperature

DETECTOR = "FillerTemperatureAnomaly"


class _Failing:
    """Stands in for a detector whose model fails on every update."""

    def __init__(self) -> None:
        self.calls = 0

    def update_at(self, *arguments: Any) -> None:
        self.calls += 1
        raise RuntimeError("model state corrupt")


async def test_a_failing_detector_is_logged_once_and_the_twin_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aas_server.runtime.predictive")
    async with Hub(predictive_settings(tmp_path / "data")) as hub, aiohttp.ClientSession() as http:
        assert hub.simulator is not None
        assert hub.rest_url is not None
        assert hub.predictive is not None
        hub.simulator.pause()
        working = hub.predictive.detectors[DETECTOR]
        failing = _Failing()
        hub.predictive.detectors[DETECTOR] = failing  # type: ignore[assignment]
        for step in range(4):
            await set_temperature(hub, 300 + 10 * step)
        await wait_until(lambda: failing.calls >= 4, within=5.0, what="four failing updates")

        def failures() -> list[logging.LogRecord]:
            return [r for r in caplog.records if DETECTOR in r.getMessage() and "failed" in r.getMessage()]

        assert len(failures()) == 1, [r.getMessage() for r in failures()]
        assert failures()[0].exc_info is not None  # the first failure carries its traceback
        # the twin keeps serving: the sensor's value is current on REST
        async with http.get(f"{element_url(hub.rest_url, SENSOR, 'Temperature')}/$value") as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["Temperature"] == pytest.approx(33.0)
        # the detector works again: its recovery is logged once
        hub.predictive.detectors[DETECTOR] = working
        await set_temperature(hub, 340)
        await set_temperature(hub, 350)
        await wait_until(
            lambda: any(DETECTOR in r.getMessage() and "works again" in r.getMessage() for r in caplog.records),
            within=5.0,
            what="the recovery logged",
        )
        assert sum("works again" in r.getMessage() for r in caplog.records) == 1
        assert len(failures()) == 1
