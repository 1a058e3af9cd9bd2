"""IDTA ``aas-test-engines``: the four SSP-002 read profiles of Part 2 against a real server.

Each suite runs against ``create_app`` on a loopback port holding the conformance data set
(``tests/conformance/dataset.py``: a handmade shell with every submodel element kind, then the
demo plant), which must itself pass the engines' file check. A suite passes when the engines
report no failed check, positive or negative; the assertion message lists every failed check
with its request, what the engine expected and what it got. How the service suites are mounted
is described in ``tests/conformance/engine.py`` and ``docs/conformance.md``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conformance.dataset import (
    ALL_ELEMENTS_SUBMODEL_ID,
    ELEMENT_KINDS,
    conformance_data_set,
    environment_json,
    file_check_failures,
    read_environment,
)
from tests.conformance.engine import SUITES, Suite, run_suite
from tests.conformance.server import ENGINE_API, serve


@pytest.fixture(scope="module")
def data_set() -> dict[str, Any]:
    """The conformance data set as a Part 1 JSON environment (each test loads its own copy)."""
    return environment_json(conformance_data_set())


def test_the_data_set_passes_the_engine_file_check_and_holds_every_element_kind(data_set: dict[str, Any]) -> None:
    failures = file_check_failures(data_set)
    if failures:
        pytest.fail("the engines' file check fails on the conformance data set:\n" + "\n".join(failures), False)
    first = next(submodel for submodel in data_set["submodels"] if submodel["id"] == ALL_ELEMENTS_SUBMODEL_ID)
    assert {element["modelType"] for element in first["submodelElements"]} == set(ELEMENT_KINDS)
    assert data_set["submodels"][0] is first
    assert len(read_environment(data_set)) == sum(
        len(data_set[key]) for key in ("assetAdministrationShells", "submodels", "conceptDescriptions")
    )


@pytest.mark.parametrize("suite", list(SUITES.values()), ids=list(SUITES))
async def test_suite_passes_every_check(suite: Suite, data_set: dict[str, Any]) -> None:
    async with serve(read_environment(data_set)) as origin:
        report = await asyncio.to_thread(run_suite, origin + ENGINE_API, suite)
    if not report.passed or report.positive_total == 0:
        pytest.fail(report.summary(), pytrace=False)
