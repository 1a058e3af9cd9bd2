"""The submodels the hub derives itself pass conformance and survive a vendor round trip.

A demo hub (``examples/bottling-line/hub.yaml``) with its KPIs, PredictiveMaintenance (IDTA 02048),
Alarms (BasicEventElements), time series, the IDTA 02005 Simulation Models submodel and the results
of one finished simulation job is downloaded through ``/serialization`` as JSON, XML and AASX. Each
download must pass the IDTA ``aas-test-engines`` file check (meta-model, lexical forms of values,
constraints), validate against the Part 1 schemas (``aas-specs-api/part1.yaml`` in ``$AAS_REFERENCE_DIR``,
default ``../shared/reference``),
be read by basyx's own readers in strict mode, keep every model reference resolvable, and come back
unchanged from a fresh hub it is uploaded into (``POST /packages``).

The engines (1.0) know the v3.0 XML namespace only; the hub writes v3.1 (basyx 2.2), whose XML
schema differs from v3.0 in nothing these submodels use, so the XML is checked with the namespace
renamed. Part 1's string pattern spells XML characters as UTF-16 surrogate pairs, which the Rust
regex engine of ``jsonschema_rs`` refuses; it is given the same set of characters as code points.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema_rs
import pytest
from aas_test_engines import file
from aiohttp import FormData
from basyx.aas import model
from basyx.aas.adapter import aasx
from basyx.aas.adapter.json import read_aas_json_file
from basyx.aas.adapter.xml import read_aas_xml_file

from aas_server.config import HubSettings
from aas_server.errors import ConfigurationError
from aas_server.model.timeseries import RecordedVariable, plan_time_series
from aas_server.runtime.hub import Hub
from aas_server.runtime.kpi import kpi_submodel
from tests.conformance.dataset import _failures, environment_json, file_check_failures
from tests.conformance.engine import run_suite, suites_for
from tests.conformance.fuzzing import bundled_schema
from tests.conformance.server import ENGINE_API, serve
from tests.support import eventually
from tests.test_end_to_end import settings_for
from tests.test_simulation_rest import PROCESS, finished, origin_of, post

AASX = "application/asset-administration-shell-package+xml"
FORMATS = {"json": "application/json", "xml": "application/xml", "aasx": AASX}
DERIVED = ("/kpi", "/predictive-maintenance", "/alarms", "/time-series", "/simulation-models")
"""Endings of the ids of the submodels the hub builds itself (and the results of simulation jobs)."""


def is_derived(identifier: str) -> bool:
    return identifier.endswith(DERIVED) or "/simulation-results/" in identifier


_XML_CHARACTERS = r"^[\x09\x0a\x0d\x20-\x{D7FF}\x{E000}-\x{FFFD}\x{10000}-\x{10FFFF}]*$"


def _code_point_patterns(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: _XML_CHARACTERS if key == "pattern" and isinstance(value, str) and "ud800" in value
            else _code_point_patterns(value)
            for key, value in node.items()
        }  # fmt: skip
    if isinstance(node, list):
        return [_code_point_patterns(item) for item in node]
    return node


def schema_errors(environment: dict[str, Any]) -> list[str]:
    """Where ``environment`` breaks the Part 1 ``Environment`` schema, one line per error."""
    components = _code_point_patterns(bundled_schema())["components"]
    validator = jsonschema_rs.validator_for({"$ref": "#/components/schemas/Environment", "components": components})
    return [
        f"/{'/'.join(map(str, error.instance_path))}: {error.message[:300]}"
        for error in validator.iter_errors(environment)
    ]


def demo_settings(data_dir: Path, rules: Path | None = None) -> HubSettings:
    """The demo hub with Alarms submodels, bearing wear (so that the RUL has values) and ``rules`` added."""
    settings = settings_for(data_dir)
    analytics = settings.analytics.model_copy(
        update={"alarm_submodels": True, "rules_files": [*settings.analytics.rules_files, *([rules] if rules else [])]}
    )
    simulator = settings.simulator.model_copy(update={"faults": ["bearing-wear", "jam"]})
    return settings.model_copy(update={"analytics": analytics, "simulator": simulator})


def strict_read(data: bytes, kind: str) -> model.DictIdentifiableStore[model.Identifiable]:
    """The identifiables of a download, read by basyx's own readers with ``failsafe=False``."""
    if kind == "json":
        return read_aas_json_file(io.StringIO(data.decode("utf-8")), failsafe=False)
    if kind == "xml":
        return read_aas_xml_file(io.BytesIO(data), failsafe=False)
    store: model.DictIdentifiableStore[model.Identifiable] = model.DictIdentifiableStore()
    with aasx.AASXReader(io.BytesIO(data), failsafe=False) as reader:
        reader.read_into(store, aasx.DictSupplementaryFileContainer())  # type: ignore[no-untyped-call]
    return store


def canonical(environment: dict[str, Any]) -> dict[str, Any]:
    """``environment`` by id, the submodel references of each shell in one order (basyx keeps them in a set)."""
    result: dict[str, Any] = {}
    for key in ("assetAdministrationShells", "submodels", "conceptDescriptions"):
        for item in environment.get(key, []):
            if "submodels" in item and key == "assetAdministrationShells":
                item = {**item, "submodels": sorted(item["submodels"], key=lambda reference: json.dumps(reference))}
            result[item["id"]] = item
    return result


def engine_failures(data: bytes, kind: str) -> list[str]:
    """The engines' file check of one download (see the module docstring for the XML namespace)."""
    if kind == "json":
        return file_check_failures(json.loads(data))
    if kind == "xml":
        text = data.decode("utf-8").replace("https://admin-shell.io/aas/3/1", "https://admin-shell.io/aas/3/0")
        return list(_failures(file.check_xml_file(io.StringIO(text))))
    # the AASX is checked through its XML part with the same renaming
    return engine_failures(environment_xml(strict_read(data, "aasx")), "xml")


def environment_xml(store: model.DictIdentifiableStore[model.Identifiable]) -> bytes:
    from basyx.aas.adapter.xml import write_aas_xml_file

    out = io.BytesIO()
    write_aas_xml_file(out, store)
    return out.getvalue()


def unresolved_references(store: model.DictIdentifiableStore[model.Identifiable]) -> list[str]:
    """Model references of the derived submodels (ReferenceElements, BasicEventElements' ``observed``) that
    resolve to nothing in ``store``."""
    problems: list[str] = []
    for identifiable in store:
        if not isinstance(identifiable, model.Submodel) or not is_derived(identifiable.id):
            continue
        for element in _walk(identifiable.submodel_element):
            targets: list[model.Reference] = []
            if isinstance(element, model.ReferenceElement) and element.value is not None:
                targets.append(element.value)
            if isinstance(element, model.BasicEventElement):
                targets.append(element.observed)
            for reference in targets:
                if not isinstance(reference, model.ModelReference):
                    continue
                try:
                    reference.resolve(store)
                except (KeyError, ValueError, TypeError) as error:
                    problems.append(f"{identifiable.id} {element.id_short}: {error}")
    return problems


def _walk(elements: Any) -> Any:
    for element in elements:
        yield element
        for attribute in ("value", "statement", "annotation"):
            children = getattr(element, attribute, None)
            if (
                isinstance(children, model.NamespaceSet | model.OrderedNamespaceSet | list)
                and children
                and all(isinstance(child, model.SubmodelElement) for child in children)
            ):
                yield from _walk(children)


async def download(http: aiohttp.ClientSession, rest_url: str, kind: str) -> bytes:
    async with http.get(f"{rest_url}/serialization", headers={"Accept": FORMATS[kind]}) as response:
        assert response.status == 200, await response.text()
        return await response.read()


def _values(environment: dict[str, Any], ending: str, id_short: str) -> list[Any]:
    """The values of every element called ``id_short`` in the submodels whose id ends with ``ending``."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("idShort") == id_short:
                yield node.get("value")
            for child in node.values():
                yield from walk(child)
        elif isinstance(node, list):
            for child in node:
                yield from walk(child)

    return [
        value for submodel in environment["submodels"] if submodel["id"].endswith(ending) for value in walk(submodel)
    ]


def _ready(environment: dict[str, Any]) -> bool:
    """KPIs and the remaining useful life carry values."""
    return any(value is not None for value in _values(environment, "/kpi", "Availability")) and any(
        value is not None for value in _values(environment, "/predictive-maintenance", "DurationValue")
    )


async def test_the_demos_derived_submodels_pass_the_checks_and_come_back_unchanged_from_a_fresh_hub(
    tmp_path: Path,
) -> None:
    async with Hub(demo_settings(tmp_path / "data")) as hub, aiohttp.ClientSession() as http:
        rest_url = hub.rest_url
        assert rest_url is not None
        status, body, location = await post(http, f"{rest_url}/simulations", {"shell": PROCESS, "horizon": 600}, {})
        assert status == 202, body
        assert (await finished(http, origin_of(f"{rest_url}/simulations", location)))["state"] == "done"

        async def json_download() -> dict[str, Any]:
            result: dict[str, Any] = json.loads(await download(http, rest_url, "json"))
            return result

        await eventually(json_download, _ready, within=60)
        downloads = {kind: await download(http, rest_url, kind) for kind in FORMATS}

        # the Part 2 service suites, mounted on the live hub's process shell and on one submodel of each kind
        served = [submodel["id"] for submodel in json.loads(downloads["json"])["submodels"]]
        chosen = [next(each for each in served if each.endswith(ending)) for ending in DERIVED]
        chosen.append(next(each for each in served if "/simulation-results/" in each))
        for submodel_id in chosen:
            suites = suites_for(PROCESS, submodel_id)
            for name in ("submodel-service", "aas-service") if submodel_id == chosen[0] else ("submodel-service",):
                report = await asyncio.to_thread(run_suite, rest_url, suites[name])
                assert report.passed, f"{submodel_id}: {report.summary()}"
                assert report.positive_total > 0, report.summary()

    environment = json.loads(downloads["json"])
    derived = sorted(
        each["id"]
        for each in environment["submodels"]
        if each["id"].endswith(DERIVED) or "/simulation-results/" in each["id"]
    )
    assert len([each for each in derived if each.endswith("/alarms")]) >= 3, derived
    assert any("/simulation-results/" in each for each in derived), derived
    assert len(derived) >= 16, derived

    for kind, data in downloads.items():
        assert engine_failures(data, kind) == [], kind
    assert schema_errors(environment) == []

    snapshot = {kind: strict_read(data, kind) for kind, data in downloads.items()}
    for kind, store in snapshot.items():
        assert unresolved_references(store) == [], kind
        assert set(canonical(environment_json(store))) == set(canonical(environment)), kind

    # the AASX is one snapshot: uploaded into a fresh hub, every format it gives back holds the same objects
    expected = canonical(environment_json(snapshot["aasx"]))
    async with serve([]) as origin, aiohttp.ClientSession() as http:
        form = FormData()
        form.add_field("fileName", "demo.aasx")
        form.add_field("file", downloads["aasx"], filename="demo.aasx", content_type=AASX)
        async with http.post(f"{origin}{ENGINE_API}/packages", data=form) as response:
            assert response.status == 201, await response.text()
        for kind in FORMATS:
            again = strict_read(await download(http, origin + ENGINE_API, kind), kind)
            assert canonical(environment_json(again)) == expected, kind


LONG_NAME = "filler-temperature-" + "very-long-name-" * 14
"""A rule name the rules file accepts (up to 256 characters) but no idShort may carry (128 at most)."""


async def test_an_alarm_rule_with_a_long_name_gives_a_conformant_alarms_submodel(tmp_path: Path) -> None:
    """A rule name is up to 256 characters: its BasicEventElement's idShort (at most 128) and messageTopic (at most
    255 characters, Part 1 ``MessageTopicType``) must still be valid, and two such names must not clash."""
    rules = tmp_path / "long-rules.yaml"
    rule = {
        "kind": "limits",
        "element": {
            "submodel": "urn:aas-server:demo:sm:filler-temperature-sensor:operational-data",
            "path": "Temperature",
        },
        "hi": 90.0,
        "severity": 500,
        "message": "far too hot",
    }
    rules.write_text(
        json.dumps({"rules": [{**rule, "name": LONG_NAME + "a"}, {**rule, "name": LONG_NAME + "b"}]}), encoding="utf-8"
    )
    async with Hub(demo_settings(tmp_path / "data", rules)) as hub, aiohttp.ClientSession() as http:
        assert hub.rest_url is not None
        environment = json.loads(await download(http, hub.rest_url, "json"))
    alarms = next(each for each in environment["submodels"] if each["id"].endswith("filler-temperature-sensor/alarms"))
    events = {element["displayName"][0]["text"]: element for element in alarms["submodelElements"]}
    assert {"filler-temperature", LONG_NAME[:64]} <= set(events)
    long_ones = [
        element for element in alarms["submodelElements"] if element["idShort"].startswith("filler_temperature_very")
    ]
    assert len(long_ones) == 2
    assert len({element["idShort"] for element in long_ones}) == 2
    assert all(len(element["idShort"]) <= 128 for element in long_ones)
    assert all(len(element.get("messageTopic", "")) <= 255 for element in alarms["submodelElements"])
    assert file_check_failures({"submodels": [alarms]}) == []
    assert schema_errors({"submodels": [alarms]}) == []


async def test_a_wear_signal_named_with_a_trailing_hyphen_is_refused_with_its_place(tmp_path: Path) -> None:
    """``FillerMotorWear-`` passed the name check, then basyx refused it as an idShort (AASd-002: no trailing
    hyphen) while the PredictiveMaintenance submodel was built, so the hub failed to start with a bare ValueError."""
    settings = settings_for(tmp_path / "data")
    wear = {**settings.analytics.predictive.wear[0], "name": "FillerMotorWear-"}
    predictive = settings.analytics.predictive.model_copy(update={"wear": [wear]})
    settings = settings.model_copy(
        update={"analytics": settings.analytics.model_copy(update={"predictive": predictive})}
    )
    with pytest.raises(
        ConfigurationError, match=r"analytics\.predictive\.wear\[0\]\.name: 'FillerMotorWear-' .*idShort"
    ):
        async with Hub(settings):
            pass


def test_time_series_of_deeply_nested_and_long_named_properties_stay_within_part_1_bounds() -> None:
    """A recorded Property two collections of 100-character idShorts deep, in a submodel whose id has 1,500
    characters: its record Property's idShort (the path with ``_``) may hold 128 characters at most and its
    texts 1,023, or basyx refuses to build the Time Series submodel and the hub cannot start with history."""
    inner_name, outer_name = "I" * 100, "O" * 100
    properties = [model.Property(f"Speed{number}", model.datatypes.Double, 1.5) for number in (1, 2)]
    inner = model.SubmodelElementCollection(inner_name, properties)
    submodel = model.Submodel("urn:example:sm:" + "s" * 1500, id_short="Deep", submodel_element=[
        model.SubmodelElementCollection(outer_name, [inner])
    ])  # fmt: skip
    shell = model.AssetAdministrationShell(
        model.AssetInformation(global_asset_id="urn:example:asset:deep"),
        "urn:example:aas:deep",
        id_short="Deep",
        submodel={model.ModelReference.from_referable(submodel)},
    )
    variables = [
        RecordedVariable(submodel.id, f"{outer_name}.{inner_name}.{each.id_short}", each) for each in properties
    ]
    (placement,) = plan_time_series([shell], [submodel], variables, "http://127.0.0.1:8081/api/v3.0")
    environment = environment_json([shell, submodel, placement.submodel])
    record = placement.submodel.get_referable("Metadata").get_referable("Record")  # type: ignore[attr-defined]
    names = [element.id_short for element in record.value]
    assert len(set(names)) == 3
    assert all(len(name) <= 128 for name in names)
    assert file_check_failures(environment) == []
    assert schema_errors(environment) == []


async def test_kpis_of_nan_and_infinity_keep_their_xsd_forms_through_every_format_and_a_fresh_hub() -> None:
    """A KPI is NaN (0/0: no planned time) or infinite (an MTBF without failures): xs:double spells them ``NaN``,
    ``INF`` and ``-INF``. Served, downloaded in each format, uploaded into a fresh hub and downloaded again, the
    values must keep those forms and pass the file check."""
    submodel = kpi_submodel("urn:example:aas:line", with_state=True)
    window = submodel.get_referable("CurrentShift")
    special = {"Availability": math.nan, "MTBF": math.inf, "MTTR": -math.inf}
    for id_short, value in special.items():
        element = window.get_referable(id_short)  # type: ignore[attr-defined]
        element.value = value
    expected = {id_short: model.datatypes.xsd_repr(value) for id_short, value in special.items()}
    assert expected == {"Availability": "NaN", "MTBF": "INF", "MTTR": "-INF"}

    def forms(environment: dict[str, Any]) -> dict[str, Any]:
        (served,) = [each for each in environment["submodels"] if each["id"] == submodel.id]
        (collection,) = [each for each in served["submodelElements"] if each["idShort"] == "CurrentShift"]
        return {each["idShort"]: each.get("value") for each in collection["value"] if each["idShort"] in special}

    async with serve([submodel]) as origin, aiohttp.ClientSession() as http:
        downloads = {kind: await download(http, origin + ENGINE_API, kind) for kind in FORMATS}
    assert forms(json.loads(downloads["json"])) == expected
    for kind, data in downloads.items():
        assert engine_failures(data, kind) == [], kind
        assert forms(environment_json(strict_read(data, kind))) == expected, kind
    async with serve([]) as origin, aiohttp.ClientSession() as http:
        form = FormData()
        form.add_field("fileName", "kpi.aasx")
        form.add_field("file", downloads["aasx"], filename="kpi.aasx", content_type=AASX)
        async with http.post(f"{origin}{ENGINE_API}/packages", data=form) as response:
            assert response.status == 201, await response.text()
        for kind in FORMATS:
            again = environment_json(strict_read(await download(http, origin + ENGINE_API, kind), kind))
            assert forms(again) == expected, kind
