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

The stateful phase (``test_stateful_sequences_conform``) runs schemathesis' state machine
(``schema.as_state_machine()``) over the same served operations: scenarios of up to six calls
where a call takes its path parameters (and for a ``PUT`` its body) from an earlier answer.
``entire.yaml`` declares no OpenAPI links, so ``workflow_document`` adds them from ``Location``:
every ``POST`` that answers ``201`` (or ``202`` for ``invoke-async``) links to every served
operation under the resource it created, the new identifier taken from its ``Location`` header
(``$response.header.Location#regex:...``), the others from the request. Schemathesis adds links
of its own from the response schemas (``GET`` a submodel, then ``PUT``/``PATCH`` it with the
answer). Scenarios start from a ``POST`` (under the data set's shells and submodels nine times in
ten); their request bodies come from narrow schemas (``STATEFUL_BODIES``: fresh ids, a few small
elements) so that most creations succeed and each is drawn in milliseconds (a full Part 1 body takes
~1 s) -- the full body schemas are the stateless tests' part. Beside the stateless checks the
stateful phase runs ``use_after_free`` (a deleted resource answers 404) and
``ensure_resource_availability`` (a created resource can be read). The server keeps its state
across scenarios, so later scenarios meet what earlier ones created, changed and deleted.

Scenarios run in suites of ``SCENARIOS_PER_SUITE``, suite ``n`` with the Hypothesis seed
``STATEFUL_SEED + n`` (``AAS_SCHEMATHESIS_SEED``), until ``STATEFUL_SCENARIOS``
(``AAS_SCHEMATHESIS_CASES / 10``, at least 20) or ``AAS_SCHEMATHESIS_STATEFUL_SECONDS`` (default
150) are reached. Failures are collected, not shrunk, and listed together; a suite Hypothesis ends as
flaky (the server's state made a replayed scenario differ) is counted and the next one starts. The
test asserts that linked multi-step sequences ran, a creation followed by a read of what was created
among them. Left to the stateless tests: AASX package uploads (``STATEFUL_LEFT_OUT``), thumbnails and
attachments as link targets (``_NOT_CREATED``).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from unittest import mock

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis.errors import Flaky
from schemathesis.core.failures import FailureGroup
from schemathesis.core.transport import Response
from schemathesis.generation.case import Case
from schemathesis.generation.stateful.state_machine import RecordingStateMachine, StepInput, StepOutput
from schemathesis.specs.openapi import stateful
from schemathesis.specs.openapi.checks import ensure_resource_availability, use_after_free

from tests.conformance.dataset import (
    ALL_ELEMENTS_SUBMODEL_ID,
    conformance_data_set,
    environment_json,
    read_environment,
)
from tests.conformance.fuzzing import (
    CHECKS,
    KNOWN_PATH_PARAMETERS,
    all_operations,
    bundled_schema,
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


# --- the stateful phase ---------------------------------------------------------------------------------

STATEFUL_SCENARIOS = max(20, CASES // 10)
"""Scenarios of the stateful phase (1,000 when CI asks for 10,000 examples)."""
STATEFUL_SECONDS = float(os.environ.get("AAS_SCHEMATHESIS_STATEFUL_SECONDS", "150"))
"""No suite of scenarios starts after this many seconds of the stateful phase."""
STATEFUL_SEED = int(os.environ.get("AAS_SCHEMATHESIS_SEED", "20250607"))
"""Suite ``n`` of the stateful phase runs with the Hypothesis seed ``STATEFUL_SEED + n``."""
SCENARIOS_PER_SUITE = 10
STATEFUL_CHECKS = (*CHECKS, use_after_free, ensure_resource_availability)
_METHODS = ("get", "put", "post", "patch", "delete")
_NOT_CREATED = ("/thumbnail", "/attachment")
"""Sub-resources a creation does not make: a new shell has no thumbnail, a new element no attachment."""


def _schema_object(model_type: str, properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"modelType": {"const": model_type}, **properties},
        "required": ["modelType", *required],
        "additionalProperties": False,
    }


def _stateful_bodies() -> dict[str, dict[str, Any]]:
    identifier = {"type": "string", "pattern": "^urn:example:stateful:[a-z0-9]{1,8}$"}
    id_short = {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]{1,7}$"}
    number = _schema_object(
        "Property",
        {
            "idShort": id_short,
            "valueType": {"const": "xs:int"},
            "value": {"type": "string", "pattern": "^-?[0-9]{1,6}$"},
        },
        ("idShort", "valueType"),
    )
    text = _schema_object(
        "Property",
        {
            "idShort": id_short,
            "valueType": {"const": "xs:string"},
            "value": {"type": "string", "pattern": "^[a-z ]{0,8}$"},
        },
        ("idShort", "valueType"),
    )
    language_text = {
        "type": "object",
        "properties": {"language": {"enum": ["en", "de"]}, "text": {"type": "string", "pattern": "^[a-z]{1,8}$"}},
        "required": ["language", "text"],
        "additionalProperties": False,
    }
    multi_language = _schema_object(
        "MultiLanguageProperty",
        {"idShort": id_short, "value": {"type": "array", "minItems": 1, "maxItems": 1, "items": language_text}},
        ("idShort",),
    )
    interval = _schema_object(
        "Range",
        {
            "idShort": id_short,
            "valueType": {"const": "xs:int"},
            "min": {"enum": ["0", "1"]},
            "max": {"enum": ["5", "9"]},
        },
        ("idShort", "valueType"),
    )
    collection = _schema_object(
        "SubmodelElementCollection",
        {"idShort": id_short, "value": {"type": "array", "maxItems": 1, "items": {"anyOf": [number, text]}}},
        ("idShort",),
    )
    asset_information = {
        "type": "object",
        "properties": {"assetKind": {"enum": ["Instance", "Type"]}, "globalAssetId": identifier},
        "required": ["assetKind", "globalAssetId"],
        "additionalProperties": False,
    }
    submodel_key = {
        "type": "object",
        "properties": {"type": {"const": "Submodel"}, "value": identifier},
        "required": ["type", "value"],
        "additionalProperties": False,
    }
    element = {"$ref": "#/components/schemas/StatefulSubmodelElement"}
    return {
        "SubmodelElement": {"anyOf": [number, text, multi_language, interval, collection]},
        "Submodel": _schema_object(
            "Submodel",
            {
                "id": identifier,
                "idShort": id_short,
                "submodelElements": {"type": "array", "maxItems": 3, "items": element},
            },
            ("id",),
        ),
        "AssetAdministrationShell": _schema_object(
            "AssetAdministrationShell",
            {"id": identifier, "idShort": id_short, "assetInformation": asset_information},
            ("id", "assetInformation"),
        ),
        "ConceptDescription": _schema_object("ConceptDescription", {"id": identifier, "idShort": id_short}, ("id",)),
        "Reference": {
            "type": "object",
            "properties": {
                "type": {"const": "ModelReference"},
                "keys": {"type": "array", "minItems": 1, "maxItems": 1, "items": submodel_key},
            },
            "required": ["type", "keys"],
            "additionalProperties": False,
        },
    }


STATEFUL_BODIES = _stateful_bodies()
"""Request bodies of the stateful phase, by the Part 1 schema they stand in for: valid by construction
(fresh ``urn:example:stateful:`` ids, idShorts, a few small elements). Other request bodies keep their
schema with every array limited to one item (``Stateful...`` copies)."""


def _operations_by_id(document: dict[str, Any], served_ids: set[str]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    found = {}
    for path, item in document["paths"].items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is not None and operation.get("operationId") in served_ids:
                found[operation["operationId"]] = (method, path, operation)
    return found


def _stateful_request_schemas(document: dict[str, Any], served_ids: set[str]) -> None:
    """Point every served JSON request body at a ``Stateful<Name>`` schema (see ``STATEFUL_BODIES``)."""
    schemas = document["components"]["schemas"]

    def small_copy(name: str) -> str:
        copied = "Stateful" + name
        if copied not in schemas:
            schemas[copied] = {}
            schemas[copied] = limited(copy.deepcopy(schemas[name]))
        return copied

    def limited(node: Any) -> Any:
        if isinstance(node, list):
            return [limited(item) for item in node]
        if not isinstance(node, dict):
            return node
        result = {key: limited(value) for key, value in node.items() if key != "$ref"}
        if "$ref" in node:
            result["$ref"] = "#/components/schemas/" + small_copy(node["$ref"].rsplit("/", 1)[-1])
        if result.get("type") == "array":
            result["maxItems"] = min(result.get("maxItems", 1), 1)
        return result

    for name, schema in STATEFUL_BODIES.items():
        schemas["Stateful" + name] = schema
    for _, _, operation in _operations_by_id(document, served_ids).values():
        content = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if content is not None and "$ref" in content["schema"]:
            content["schema"] = {
                "$ref": "#/components/schemas/" + small_copy(content["schema"]["$ref"].rsplit("/", 1)[-1])
            }


def _created_resource(path: str, status: str, paths: list[str]) -> str | None:
    """The path template of what a ``POST`` to ``path`` creates, or ``None`` when no served operation is under it."""
    if status == "202":
        return path.split("/invoke-async")[0] + "/operation-status/{handleId}"
    below = sorted(
        {path + "/" + other[len(path) + 1 :].split("/")[0] for other in paths if other.startswith(path + "/{")}
    )
    if below:
        return below[0]
    return path if path.endswith("}") else None


def location_links(document: dict[str, Any], served_ids: set[str]) -> int:
    """Add OpenAPI links from each served creating ``POST`` to the served operations under what it created.

    The new resource's parameter comes from the ``Location`` header, the others from the ``POST``'s own
    path; a ``PUT`` of exactly the created resource sends the ``POST``'s answer back. Thumbnails and
    attachments (``_NOT_CREATED``) are left out: their 404 after a creation is right.
    Returns the number of links added.
    """
    operations = _operations_by_id(document, served_ids)
    paths = [path for _, path, _ in operations.values()]
    added = 0
    for method, path, operation in operations.values():
        if method != "post":
            continue
        for status in ("201", "202"):
            response = operation["responses"].get(status)
            resource = _created_resource(path, status, paths) if response is not None else None
            if response is None or resource is None:
                continue
            if "$ref" in response:
                response = copy.deepcopy(document["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]])
                operation["responses"][status] = response
            (new,) = re.findall(r"{([^}]+)}$", resource)
            segment = resource.rsplit("/", 2)[-2]
            known = set(re.findall(r"{([^}]+)}", path)) - {new}
            links = response.setdefault("links", {})
            for target_id, (target_method, target_path, target) in operations.items():
                if target_path != resource and not target_path.startswith(resource + "/"):
                    continue
                if target_path.endswith(_NOT_CREATED):
                    continue
                names = re.findall(r"{([^}]+)}", target_path)
                if not set(names) <= known | {new}:
                    continue
                link: dict[str, Any] = {
                    "operationId": target_id,
                    "parameters": {
                        f"path.{name}": f"$response.header.Location#regex:/{re.escape(segment)}/([^/]+)$"
                        if name == new
                        else f"$request.path.{name}"
                        for name in names
                    },
                }
                json_body = "application/json" in target.get("requestBody", {}).get("content", {})
                if target_method == "put" and target_path == resource and status == "201" and json_body:
                    link["requestBody"] = "$response.body"
                links[f"Created{target_id}"] = link
                added += 1
    return added


def workflow_document(served_ids: set[str]) -> dict[str, Any]:
    """``bundled_schema()`` with the stateful phase's request bodies and ``Location`` links."""
    document = bundled_schema()
    _stateful_request_schemas(document, served_ids)
    location_links(document, served_ids)
    return document


def _any_post_may_start(likely_root: Callable[..., bool]) -> Callable[..., bool]:
    """Schemathesis' choice of scenario starts (``likely_root``), with every ``POST`` allowed.

    Schemathesis takes body fields such as ``globalAssetId`` and ``semanticId`` for foreign keys of
    resources no operation creates and drops such ``POST`` s as scenario starts; in the AAS they are
    plain references, so a shell can be created without any other resource.
    """

    def may_start(operation: Any, node: Any, produced_anywhere: set[str]) -> bool:
        return bool(operation.method == "post" or likely_root(operation, node, produced_anywhere))

    return may_start


@dataclass
class StatefulFailure:
    check: str
    request: str
    message: str

    def __str__(self) -> str:
        return f"{self.check} on {self.request}\n      {self.message}"


@dataclass
class StatefulReport:
    """What the stateful phase ran: scenarios, steps, which links were followed, failures."""

    scenarios: int = 0
    steps: int = 0
    linked_steps: int = 0
    """Steps whose parameters or body came from an earlier answer (a link followed)."""
    chained_scenarios: int = 0
    """Scenarios with at least one linked step."""
    created_then_read: int = 0
    """Linked ``GET`` s answered 200 right after the ``POST`` that created what they read (answered 201)."""
    flaky_suites: int = 0
    """Suites Hypothesis ended because the server's state made a replayed scenario differ."""
    links: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    succeeded: set[str] = field(default_factory=set)
    """Operations answered 2xx at least once."""
    failures: dict[tuple[str, str, int], StatefulFailure] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"{self.scenarios} scenarios, {self.steps} steps, {self.linked_steps} linked steps in "
            f"{self.chained_scenarios} scenarios, {self.created_then_read} create-then-read, "
            f"{len(self.links)} distinct links followed, {len(self.succeeded)} operations answered 2xx, "
            f"{self.flaky_suites} suites ended as flaky",
            "statuses: " + ", ".join(f"{key}: {count}" for key, count in sorted(self.statuses.items())),
            "links: " + ", ".join(f"{key} ({count})" for key, count in self.links.most_common(12)),
            f"{len(self.failures)} failures",
        ]
        lines.extend(f"  - {failure}" for failure in self.failures.values())
        return "\n".join(lines)


class WorkflowChecks(RecordingStateMachine):
    """What the stateful test adds to schemathesis' state machine: transport, checks, statistics.

    Combined with the class ``as_state_machine()`` builds (``stateful_machine``). A scenario's first
    step uses the data set's identifiers for its path parameters nine times in ten (like the
    stateless tests), so that ``POST`` s under existing submodels create something.
    """

    base_url: ClassVar[str] = ""
    session: ClassVar[requests.Session]
    report: ClassVar[StatefulReport]
    choices: ClassVar[random.Random]

    def setup(self) -> None:
        self.report.scenarios += 1
        self._chained = False
        self._last: StepOutput | None = None

    def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
        return {"base_url": self.base_url, "session": self.session, "timeout": 30}

    def step(self, input: StepInput) -> StepOutput:
        report = self.report
        if input.transition is None:
            for name, values in KNOWN_PATH_PARAMETERS.items():
                if name in (input.case.path_parameters or {}) and self.choices.random() < 0.9:
                    input.case.path_parameters[name] = self.choices.choice(values)
        output = super().step(input)
        operation = output.case.operation
        status = output.response.status_code
        report.steps += 1
        report.statuses[f"{operation.method.upper()} {status}"] += 1
        if 200 <= status < 300:
            report.succeeded.add(operation.label)
        if input.transition is not None and input.is_applied:
            report.linked_steps += 1
            report.links[input.transition.id] += 1
            if not self._chained:
                self._chained = True
                report.chained_scenarios += 1
            source = self._last
            if (
                source is not None
                and source.case.operation.method.upper() == "POST"
                and source.response.status_code == 201
                and operation.method.upper() == "GET"
                and status == 200
            ):
                report.created_then_read += 1
        self._last = output
        return output

    def validate_response(
        self, response: Response, case: Case[Any], additional_checks: Any = None, **kwargs: Any
    ) -> None:
        try:
            case.validate_response(
                response, checks=list(STATEFUL_CHECKS), transport_kwargs=kwargs or None, recorder=self.recorder
            )
        except FailureGroup as group:
            for failure in group.exceptions:
                key = (failure.title, case.operation.label, response.status_code)
                if key not in self.report.failures:
                    request = f"{response.request.method} {response.request.url}"[:300]
                    message = "\n      ".join(failure.message.strip().splitlines()[:3])
                    self.report.failures[key] = StatefulFailure(
                        f"{failure.title} ({response.status_code})", request, message
                    )


STATEFUL_LEFT_OUT = ("PostAASXPackage", "PutAASXByPackageId")
"""Operations the stateful phase leaves to the stateless tests: generated multipart AASX uploads are
never valid packages, so these would only ever answer 400 and take the place of useful scenario starts."""


def stateful_machine(served_ids: set[str]) -> Any:
    """Schemathesis' state machine over the served operations of ``workflow_document``, with ``WorkflowChecks``."""
    included = sorted(served_ids - set(STATEFUL_LEFT_OUT))
    schema = schemathesis.openapi.from_dict(workflow_document(served_ids)).include(operation_id=included)
    with mock.patch.object(
        stateful, "is_likely_root_transition", _any_post_may_start(stateful.is_likely_root_transition)
    ):
        machine = schema.as_state_machine()
    return type("Workflow", (WorkflowChecks, machine), {})


def run_stateful_phase(base_url: str, served_ids: set[str]) -> StatefulReport:
    """Run suites of scenarios against ``base_url`` until the scenario count or the time budget is reached."""
    report = StatefulReport()
    workflow = stateful_machine(served_ids)
    workflow.base_url = base_url
    workflow.report = report
    workflow.session = requests.Session()
    workflow.session.trust_env = False
    settings = hypothesis.settings(
        max_examples=SCENARIOS_PER_SUITE,
        stateful_step_count=6,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
        report_multiple_bugs=False,
    )
    started = time.monotonic()
    suite = 0
    try:
        while report.scenarios < STATEFUL_SCENARIOS and time.monotonic() - started < STATEFUL_SECONDS:
            workflow.choices = random.Random(STATEFUL_SEED + suite)
            seeded: Any = hypothesis.seed(STATEFUL_SEED + suite)(type(f"Suite{suite}", (workflow,), {}))
            try:
                seeded.run(settings=settings)
            except Flaky:
                report.flaky_suites += 1
            suite += 1
    finally:
        workflow.session.close()
    return report


@pytest.mark.timeout(STATEFUL_SECONDS + 300)
async def test_stateful_sequences_conform(data_set: dict[str, Any], reference: Any) -> None:
    served_ids = {operation_id(operation) for operation in OPERATIONS}
    async with serve(read_environment(data_set)) as origin:
        report = await asyncio.to_thread(run_stateful_phase, origin + OPENAPI_API, served_ids)
    print("\n" + report.summary())
    if report.failures:
        pytest.fail(report.summary(), pytrace=False)
    assert report.scenarios >= min(STATEFUL_SCENARIOS, 20), report.summary()
    assert report.chained_scenarios >= report.scenarios // 5, "too few scenarios followed a link\n" + report.summary()
    assert report.created_then_read > 0, "no creation was followed by a read of it\n" + report.summary()


# --- findings of the stateful phase, pinned down -----------------------------------------------------


async def test_an_annotation_added_or_replaced_must_be_a_data_element(data_set: dict[str, Any]) -> None:
    """Found by the stateful phase: a collection posted into (or put over an annotation of) an
    AnnotatedRelationshipElement was stored, and every later ``GET /serialization`` violated Part 1."""
    submodel = base64.urlsafe_b64encode(ALL_ELEMENTS_SUBMODEL_ID.encode()).decode().rstrip("=")
    elements = f"{OPENAPI_API}/submodels/{submodel}/submodel-elements"
    collection = {"modelType": "SubmodelElementCollection", "idShort": "Note"}
    async with serve(read_environment(data_set)) as origin:
        session = requests.Session()
        session.trust_env = False
        with session:
            posted = await asyncio.to_thread(session.post, f"{origin}{elements}/Annotated", json=collection)
            replaced = await asyncio.to_thread(session.put, f"{origin}{elements}/Annotated.Note", json=collection)
            annotation = await asyncio.to_thread(session.get, f"{origin}{elements}/Annotated.Note")
            added = await asyncio.to_thread(
                session.post,
                f"{origin}{elements}/Annotated",
                json={"modelType": "Property", "idShort": "Extra", "valueType": "xs:string"},
            )
    assert (posted.status_code, replaced.status_code) == (400, 400), (posted.text, replaced.text)
    assert "data elements" in posted.json()["messages"][0]["text"]
    assert annotation.json()["modelType"] == "Property"
    assert added.status_code == 201, added.text
