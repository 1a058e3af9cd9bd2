"""schemathesis against the Part 2 OpenAPI (``entire.yaml``): every operation the server routes.

Each served operation is fuzzed (positive and negative examples, derandomized, no deadline) over
real HTTP under ``/api/v3.1`` (``entire.yaml`` is release 3.1.2) against ``create_app`` on a
loopback port holding a fresh copy of the conformance data set, with the checks of
``tests/conformance/fuzzing.py``: no 5xx, and status code, content type and body as the OpenAPI
declares them. A failing test lists every distinct failure with the first request that showed it.

``AAS_SCHEMATHESIS_CASES`` is the number of examples across all served operations (default
1000 for local runs; CI sets 10000 or more), shared out by ``case_budget``: request bodies are
slow to generate and get a small fixed share. Hypothesis may end an operation early when its
inputs allow few distinct requests, so the last test checks the examples actually run against
the budget when the whole module ran.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from tests.conformance.dataset import conformance_data_set, environment_json, read_environment
from tests.conformance.fuzzing import (
    all_operations,
    case_budget,
    fuzz_operation,
    load_schema,
    operation_id,
    schema_path,
    served_operations,
)
from tests.conformance.operations import NOT_SERVED
from tests.conformance.server import OPENAPI_API, serve

CASES = int(os.environ.get("AAS_SCHEMATHESIS_CASES", "1000"))
"""Examples across all served operations."""

SCHEMA: Any = load_schema() if schema_path().is_file() else None
OPERATIONS: list[Any] = served_operations(SCHEMA) if SCHEMA is not None else []
BUDGET = case_budget(OPERATIONS, CASES)
"""Examples per operation: few for request bodies (slow to generate), one without inputs, the rest shared."""
RUN: dict[str, int] = {}
"""Examples run per operation in this session."""


@pytest.fixture(scope="module")
def data_set() -> dict[str, Any]:
    """The conformance data set as a Part 1 JSON environment (each test loads its own copy)."""
    return environment_json(conformance_data_set())


def test_every_operation_is_served_or_listed_with_a_reason(reference: Any) -> None:
    everything = {operation_id(operation) for operation in all_operations(SCHEMA)}
    served = {operation_id(operation) for operation in OPERATIONS}
    assert served, "no operation of entire.yaml is routed"
    assert not served & NOT_SERVED.keys(), f"served, so remove from operations.py: {sorted(served & NOT_SERVED.keys())}"
    missing = everything - served - NOT_SERVED.keys()
    assert not missing, f"neither served nor listed in tests/conformance/operations.py: {sorted(missing)}"
    assert not NOT_SERVED.keys() - everything, f"not in entire.yaml: {sorted(NOT_SERVED.keys() - everything)}"


@pytest.mark.parametrize("operation", OPERATIONS, ids=[operation_id(operation) for operation in OPERATIONS])
async def test_operation_conforms(operation: Any, data_set: dict[str, Any], reference: Any) -> None:
    async with serve(read_environment(data_set)) as origin:
        report = await asyncio.to_thread(
            fuzz_operation, operation, origin + OPENAPI_API, BUDGET[operation_id(operation)]
        )
    RUN[report.operation_id] = report.cases
    if report.failures or report.cases == 0:
        pytest.fail(report.summary(), pytrace=False)


def test_the_run_reached_the_case_budget(reference: Any) -> None:
    if len(RUN) < len(OPERATIONS):
        pytest.skip(f"only {len(RUN)} of {len(OPERATIONS)} operations ran in this session")
    total = sum(RUN.values())
    assert total >= CASES * 0.95, f"{total} examples run, {CASES} asked for: {RUN}"
