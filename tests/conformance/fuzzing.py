"""Property-based checks of the REST API against the Part 2 OpenAPI (``entire.yaml``) with schemathesis.

- ``load_schema()`` reads ``aas-specs-api/entire.yaml`` from the reference material together with
  the ``part1.yaml`` and ``part2.yaml`` its ``$ref`` s point to (``bundled_schema``).
- ``served_operations(schema)`` are the operations our application routes: every operation of
  the schema whose method and path resolve, under ``/api/v3.1``, to a route of
  ``aas_server.api.app.create_app`` that binds each path parameter to exactly the value given for
  it (so ``GET /shells/$reference`` is not taken as served by ``GET /shells/{aasIdentifier}``).
  ``tests/conformance/operations.py`` gives the reason for each operation that is not served.
- ``fuzz_operation(operation, base_url, cases)`` runs ``cases`` Hypothesis examples of one operation
  against a running server (blocking: call it through ``asyncio.to_thread``), half of them with
  path parameters replaced by identifiers and idShort paths of the conformance data set so that
  successful answers are checked too, and returns every distinct failure of ``CHECKS``.

Examples are derandomized (fixed seed per operation) and have no deadline; failures are
collected, not raised, so one run lists them all and is not stopped by shrinking.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import schemathesis
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.deserialization import deserialize_yaml
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from aas_server.api.app import create_app
from aas_server.store.twin_store import TwinStore
from tests.conformance.dataset import (
    ALL_ELEMENTS_SUBMODEL_ID,
    CONCEPT_ID,
    CONFORMANCE_SHELL_ID,
    SECOND_SUBMODEL_ID,
)
from tests.conformance.server import OPENAPI_API
from tests.support import reference_dir

CHECKS: tuple[Callable[..., Any], ...] = (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
)
"""No 5xx; body, status code and content type as the operation's responses in the OpenAPI declare."""


def _base64url(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode("ascii").rstrip("=")


KNOWN_PATH_PARAMETERS: dict[str, tuple[str, ...]] = {
    "aasIdentifier": (_base64url(CONFORMANCE_SHELL_ID),),
    "submodelIdentifier": (_base64url(ALL_ELEMENTS_SUBMODEL_ID), _base64url(SECOND_SUBMODEL_ID)),
    "cdIdentifier": (_base64url(CONCEPT_ID),),
    "idShortPath": (
        "Temperature", "Counter", "Running", "Label", "Name", "Limits", "Sensor", "Feeds", "Annotated",
        "Annotated.Note", "Firmware", "Manual", "Fill", "Calibrate", "TemperatureChanged", "Motor",
        "Motor.Current", "Bearing", "Bearing.Vibration", "Bearing.Vibration.Velocity", "Readings",
        "Readings[0]", "Readings[1]",
    ),
}  # fmt: skip
"""Path parameter values that exist in the conformance data set (identifiers base64url-encoded)."""


def schema_path() -> Path:
    """``entire.yaml`` of the reference material (``AAS_REFERENCE_DIR``)."""
    return reference_dir() / "aas-specs-api" / "entire.yaml"


AMBIGUOUS_UNIONS: tuple[str, ...] = ("SubmodelElementValue", "SubmodelElementMetadata")
"""``part2.yaml`` schemas whose ``oneOf`` alternatives overlap, so that no answer can satisfy them.

Every JSON object is valid under both ``SubmodelElementCollectionValue`` (``ValueOnly``: any object)
and ``MultiLanguagePropertyValue`` (any object), and every ``*Metadata`` alternative accepts the
attributes of every other one; ``oneOf`` demands exactly one match. They are read as ``anyOf``.
"""


LIST_RESULTS: tuple[str, ...] = ("GetSubmodelsValueResult",)
"""``part2.yaml`` paged results whose ``result`` is one ``SubmodelValue`` instead of a list of them.

``GET /submodels/$value`` pages through submodels like every other ``GetSubmodels*Result``; its
``result`` is read as an array of ``SubmodelValue``.
"""


def _local_references(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: re.sub(r"^part[12]\.yaml#", "#", value) if key == "$ref" and isinstance(value, str)
            else _local_references(value)
            for key, value in node.items()
        }  # fmt: skip
    if isinstance(node, list):
        return [_local_references(item) for item in node]
    return node


def bundled_schema(directory: Path | None = None) -> dict[str, Any]:
    """``entire.yaml`` with the components of ``part1.yaml`` and ``part2.yaml`` merged into it.

    References into the two parts become local; ``AMBIGUOUS_UNIONS`` are read as ``anyOf`` and
    ``LIST_RESULTS`` as lists. The three files define no component twice.
    """
    directory = directory or schema_path().parent
    documents = {
        name: deserialize_yaml((directory / f"{name}.yaml").read_text(encoding="utf-8"))
        for name in ("entire", "part1", "part2")
    }
    bundle: dict[str, Any] = _local_references(documents["entire"])
    components: dict[str, dict[str, Any]] = bundle.setdefault("components", {}) or {}
    bundle["components"] = components
    for part in ("part1", "part2"):
        for section, entries in (documents[part].get("components") or {}).items():
            components.setdefault(section, {}).update(_local_references(entries))
    for name in AMBIGUOUS_UNIONS:
        union = components["schemas"][name]
        union["anyOf"] = union.pop("oneOf")
    paged = components["schemas"]["GetSubmodelsValueResult"]["allOf"][1]["properties"]
    paged["result"] = {"type": "array", "items": paged["result"]}
    return bundle


def load_schema() -> Any:
    """The Part 2 OpenAPI (``bundled_schema``) as a schemathesis schema."""
    return schemathesis.openapi.from_dict(bundled_schema())


def operation_id(operation: Any) -> str:
    """The ``operationId`` of a schemathesis operation."""
    return str(operation.definition.raw["operationId"])


def has_inputs(operation: Any) -> bool:
    """Whether the operation has any parameter or body to vary (otherwise one example is all there is)."""
    return any(len(part) for part in (operation.path_parameters, operation.query, operation.headers, operation.body))


BODY_CASE_DIVISOR = 500
"""An operation with a request body gets ``total / BODY_CASE_DIVISOR`` examples (20 of 10,000).

Generating a request body of the Part 1 schemas (a submodel, a submodel element) costs Hypothesis
0.2 s (positive) to 1.2 s (negative) per example, a thousand times a query or path parameter, so
bodies get a fixed small share and the operations without a body share the rest of the budget.
"""


def case_budget(operations: list[Any], total: int) -> dict[str, int]:
    """Examples per operation (by ``operationId``) so that ``total`` examples are run in all.

    An operation without parameters or body gets one, one with a body ``total / BODY_CASE_DIVISOR``,
    the others an equal share of the rest.
    """
    with_body = [operation for operation in operations if len(operation.body)]
    without_inputs = [operation for operation in operations if not has_inputs(operation)]
    others = [operation for operation in operations if has_inputs(operation) and not len(operation.body)]
    per_body = max(1, math.ceil(total / BODY_CASE_DIVISOR))
    rest = max(0, total - per_body * len(with_body) - len(without_inputs))
    per_other = max(1, math.ceil(rest / max(len(others), 1)))
    budget = {operation_id(operation): per_body for operation in with_body}
    budget.update({operation_id(operation): 1 for operation in without_inputs})
    budget.update({operation_id(operation): per_other for operation in others})
    return budget


def all_operations(schema: Any) -> list[Any]:
    """Every operation of ``schema``, in document order."""
    return [result.ok() for result in schema.get_all_operations()]


async def _is_routed(app: web.Application, method: str, path: str) -> bool:
    values = {name: f"X{name}X" for name in re.findall(r"{([^}]+)}", path)}
    concrete = path
    for name, value in values.items():
        concrete = concrete.replace("{" + name + "}", value)
    match = await app.router.resolve(make_mocked_request(method.upper(), OPENAPI_API + concrete, app=app))
    if match.http_exception is not None:
        return False
    return sorted(match.values()) == sorted(values.values())


async def _routed(operations: list[Any]) -> list[bool]:
    app = create_app(TwinStore())
    return [await _is_routed(app, operation.method, operation.path) for operation in operations]


def served_operations(schema: Any) -> list[Any]:
    """The operations of ``schema`` that ``create_app`` routes (see the module docstring)."""
    operations = all_operations(schema)
    with concurrent.futures.ThreadPoolExecutor(1) as executor:  # usable with or without a running loop
        routed = executor.submit(asyncio.run, _routed(operations)).result()
    return [operation for operation, is_routed in zip(operations, routed, strict=True) if is_routed]


@dataclass(frozen=True)
class FuzzFailure:
    """One distinct failure: which check, the status, and the first request that showed it."""

    check: str
    status: int
    request: str
    message: str

    def __str__(self) -> str:
        return f"{self.check} (status {self.status}) on {self.request}\n      {self.message}"


@dataclass
class FuzzReport:
    """The outcome of fuzzing one operation."""

    operation_id: str
    label: str
    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: dict[tuple[str, int], FuzzFailure] = field(default_factory=dict)

    def summary(self) -> str:
        counts = ", ".join(f"{status}: {count}" for status, count in sorted(self.statuses.items()))
        lines = [f"{self.operation_id} ({self.label}): {self.cases} cases ({counts}), {len(self.failures)} failures"]
        lines.extend(f"  - {failure}" for failure in self.failures.values())
        return "\n".join(lines)


def _first_lines(text: str, limit: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n      ".join(lines[:limit])


def fuzz_operation(operation: Any, base_url: str, cases: int) -> FuzzReport:
    """Run ``cases`` examples of ``operation`` against the API at ``base_url``; blocking."""
    report = FuzzReport(operation_id(operation), operation.label)
    known = {name: values for name, values in KNOWN_PATH_PARAMETERS.items() if "{" + name + "}" in operation.path}
    strategy = st.one_of(
        operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
    )
    session = requests.Session()
    session.trust_env = False

    @settings(
        max_examples=cases,
        derandomize=True,
        deadline=None,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=strategy, data=st.data())
    def check(case: Any, data: Any) -> None:
        if known and data.draw(st.booleans(), label="use known path parameters"):
            for name, values in known.items():
                case.path_parameters[name] = data.draw(st.sampled_from(values), label=name)
        response = case.call(base_url=base_url, session=session, timeout=30)
        report.cases += 1
        report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=list(CHECKS))
        except FailureGroup as group:
            for failure in group.exceptions:
                _record(report, failure, response)

    try:
        check()
    finally:
        session.close()
    return report


_SCHEMA_LOCATION = re.compile(r"^Schema at (\S+?):?$", re.MULTILINE)


def _record(report: FuzzReport, failure: Failure, response: Any) -> None:
    """Keep the first example of each (check, status, schema location) triple."""
    location = _SCHEMA_LOCATION.search(failure.message)
    check = failure.title if location is None else f"{failure.title} at {location.group(1)}"
    key = (check, response.status_code)
    if key not in report.failures:
        request = f"{response.request.method} {response.request.url}"
        if len(request) > 300:
            request = request[:300] + "..."
        report.failures[key] = FuzzFailure(check, response.status_code, request, _first_lines(failure.message, 2))
