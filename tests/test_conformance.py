"""IDTA ``aas-test-engines``: the four SSP-002 read profiles of Part 2 against a real server.

Each suite runs against ``create_app`` on a loopback port holding the conformance data set
(``tests/conformance/dataset.py``: a handmade shell with every submodel element kind, then the
demo plant), which must itself pass the engines' file check; then against the demo plant alone
and against each IDTA reference template alone (the engines pick the first shell and submodel, so
each data set exercises other answers). A suite passes when the engines
report no failed check, positive or negative; the assertion message lists every failed check
with its request, what the engine expected and what it got. How the service suites are mounted
is described in ``tests/conformance/engine.py`` and ``docs/conformance.md``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from basyx.aas import model

from aas_server.exchange import read_package
from aas_server.model.twins import build_environment, load_twins
from tests.conformance.dataset import (
    ALL_ELEMENTS_SUBMODEL_ID,
    ELEMENT_KINDS,
    PLANT_FILE,
    conformance_data_set,
    environment_json,
    file_check_failures,
    read_environment,
)
from tests.conformance.engine import SUITES, EngineCrash, FailedCheck, Suite, SuiteReport, run_suite, suites_for
from tests.conformance.server import ENGINE_API, serve
from tests.support import reference_dir

_TEMPLATES = reference_dir() / "idta-templates"
TEMPLATES = sorted({path.stem for pattern in ("*.json", "*.aasx") for path in _TEMPLATES.glob(pattern)})
"""Each reference template by name: its JSON and AASX files served alone (the AASX if it imports differently)."""


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


_ENGINE_WORKERS = 2
"""Engine processes for the data sets served alone: the engines parse every answer in Python, and keep
their results in a module-global stack, so suites run in parallel only in separate processes."""


@pytest.fixture(scope="module")
def engine_processes() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(_ENGINE_WORKERS, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


async def _run_all_suites(identifiables: list[model.Identifiable], pool: ProcessPoolExecutor) -> list[SuiteReport]:
    """The four suites against one server holding ``identifiables``, in the engine processes of ``pool``.

    The service suites are mounted on the first shell and the first submodel, the ones the
    repository suites pick with ``limit=1``.
    """
    shell = next(item for item in identifiables if isinstance(item, model.AssetAdministrationShell))
    submodel = next(item for item in identifiables if isinstance(item, model.Submodel))
    loop = asyncio.get_running_loop()
    async with serve(identifiables) as origin:
        return list(
            await asyncio.gather(
                *(
                    loop.run_in_executor(pool, run_suite, origin + ENGINE_API, suite)
                    for suite in suites_for(shell.id, submodel.id).values()
                )
            )
        )


async def test_suites_pass_every_check_on_the_demo_plant_alone(engine_processes: ProcessPoolExecutor) -> None:
    """The plant without the handmade shell: the engines pick its first shell and submodel instead."""
    reports = await _run_all_suites(build_environment(load_twins(PLANT_FILE)), engine_processes)
    problems = [report.summary() for report in reports if not report.passed or report.positive_total == 0]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def _reasons(text: str) -> set[str]:
    """The engine's reasons in a check's text, without the location (``... @ /submodels/0``)."""
    return {reason.split(" @ ")[0].strip() for reason in text.split("; ") if reason.strip()}


def _data_defects(identifiables: list[model.Identifiable]) -> set[str]:
    """What the engines' own file check finds wrong in the data set itself (reasons without location)."""
    return {
        reason
        for failure in file_check_failures(environment_json(identifiables))
        for reason in _reasons(failure.split(" / ")[-1])
    }


def _has_collection_without_value(identifiables: list[model.Identifiable]) -> bool:
    stack: list[object] = [item for item in identifiables if isinstance(item, model.Submodel)]
    while stack:
        current = stack.pop()
        if isinstance(current, model.Submodel):
            stack.extend(current.submodel_element)
        elif isinstance(current, model.SubmodelElementCollection | model.SubmodelElementList):
            if not len(current.value):
                return True
            stack.extend(current.value)
        elif isinstance(current, model.Entity):
            stack.extend(current.statement)
    return False


_ENGINE_WALK = "aas_test_engines.test_cases.v3_0.interfaces.submodel:_collect_submodel_elements"
"""Where aas-test-engines 1.0.3 iterates ``element.value`` of every collection found, ``None`` when empty."""


def _unexplained(
    report: SuiteReport, defects: set[str], empty_collections: bool
) -> tuple[list[FailedCheck], list[EngineCrash]]:
    """The failed checks and engine crashes not caused by the data set itself.

    A failed check is the data's when every reason the engine gives is one its file check gives for
    the same data (the server served the template as it is). A crash is the engine's own defect when
    it raised ``TypeError`` walking a collection without value, and the data has such a collection.
    """
    failures = [failure for failure in report.failures if not (_reasons(failure.expected) or {""}) <= defects]
    crashes = [
        crash
        for crash in report.crashes
        if not (empty_collections and crash.where == _ENGINE_WALK and crash.error.startswith("TypeError("))
    ]
    return failures, crashes


def _template_data_sets(reference: Path, stem: str) -> list[tuple[str, list[model.Identifiable]]]:
    """The template's files as imported; a file that imports to the same environment as an earlier one is left out."""
    result: list[tuple[str, list[model.Identifiable]]] = []
    seen: list[dict[str, Any]] = []
    for suffix in (".json", ".aasx"):
        path = reference / "idta-templates" / (stem + suffix)
        if not path.is_file():
            continue
        identifiables = read_package(path.read_bytes(), path.name).identifiables
        document = environment_json(identifiables)
        if document not in seen:
            seen.append(document)
            result.append((path.name, identifiables))
    return result


@pytest.mark.parametrize("stem", TEMPLATES or ["(no reference files)"])
async def test_suites_pass_on_each_reference_template_alone(
    reference: Path, stem: str, engine_processes: ProcessPoolExecutor
) -> None:
    """Each IDTA template, imported and served alone: no check fails but for the template's own defects."""
    problems: list[str] = []
    data_sets = _template_data_sets(reference, stem)
    assert data_sets, f"no reference file named {stem}"
    for name, identifiables in data_sets:
        defects = _data_defects(identifiables)
        empty_collections = _has_collection_without_value(identifiables)
        for report in await _run_all_suites(identifiables, engine_processes):
            failures, crashes = _unexplained(report, defects, empty_collections)
            if failures or crashes or report.positive_passed == 0:
                problems.append(f"{name}: {report.summary()}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
