"""Property tests (hypothesis) on the parsers that take untrusted input, with a fixed seed and a time budget.

Each property runs the project's real entry point on generated input and states what a user relies
on: a malformed input is refused with the error class the edge maps to a ``4xx`` (never another
exception, which would be a ``500``), and what is accepted comes back unchanged. ``derandomize``
makes every run draw the same examples; ``max_examples`` and ``deadline`` keep the file under a
minute on two cores.
"""

from __future__ import annotations

import asyncio
import copy
import decimal
import functools
import http.client
import json
import math
import socket
import tempfile
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml
from aiohttp import web
from basyx.aas import model
from basyx.aas.model import datatypes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aas_server.api.app import create_app
from aas_server.api.serialization import decode_identifier, encode_identifier
from aas_server.errors import InvalidRequestError, MappingError, PackageError, TypeMismatchError
from aas_server.exchange import ImportResult, read_package, write_package
from aas_server.mapping.schema import load_mapping, parse_mapping
from aas_server.model import paths, values
from aas_server.store.twin_store import TwinStore

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
DEMO_MAPPING = ROOT / "mappings" / "bottling-line.yaml"

FAST = settings(derandomize=True, database=None, max_examples=300, deadline=1000)
SLOW = settings(
    derandomize=True,
    database=None,
    max_examples=120,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- idShort paths (model/paths.py) ------------------------------------------------------------------

DIGITS = st.one_of(
    st.sampled_from(["0", "12", "²", "٣", "①", "¹²"]), st.text(st.characters(categories=["Nd", "No"]), max_size=3)
)
"""List indexes, including digits that ``str.isdigit`` accepts and ``int`` refuses (superscripts)."""
ID_SHORTS = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,15}", fullmatch=True)
SEGMENTS = st.lists(st.one_of(ID_SHORTS, st.integers(min_value=0, max_value=10**12)), min_size=1, max_size=8)
PATH_TEXT = st.one_of(
    st.text(alphabet=st.sampled_from("aZz09_-.[]²٣"), max_size=40),
    st.text(max_size=40),
    st.builds(lambda digits: f"Motor[{digits}].Speed", DIGITS),
    st.builds(lambda segments: paths.format_id_short_path(tuple(segments)), SEGMENTS),
    st.builds(
        lambda head, tail: head + tail,
        st.builds(lambda s: paths.format_id_short_path(tuple(s)), SEGMENTS),
        st.text(max_size=5),
    ),
)


@FAST
@given(SEGMENTS)
def test_an_id_short_path_parses_back_to_its_segments(segments: list[str | int]) -> None:
    text = paths.format_id_short_path(tuple(segments))
    assert paths.parse_id_short_path(text) == tuple(segments)


def outcome(function: Callable[[], T], expected: type[Exception]) -> T | Exception:
    """What ``function`` returns, or the ``expected`` error it raises; any other error fails the test."""
    try:
        return function()
    except expected as error:
        return error


@FAST
@given(PATH_TEXT)
def test_any_id_short_path_text_is_parsed_canonically_or_refused_as_a_bad_request(text: str) -> None:
    segments = outcome(lambda: paths.parse_id_short_path(text), InvalidRequestError)
    if isinstance(segments, Exception):
        assert str(segments)
        return
    assert segments
    assert paths.parse_id_short_path(paths.format_id_short_path(segments)) == segments


# --- value coercion (model/values.py) --------------------------------------------------------------------

VALUE_TYPES = sorted(datatypes.XSD_TYPE_NAMES, key=lambda value_type: datatypes.XSD_TYPE_NAMES[value_type])
INTEGER_TYPES = [value_type for value_type in VALUE_TYPES if issubclass(value_type, int) and value_type is not bool]
LEXICAL = st.one_of(
    st.from_regex(r"-?[0-9]{1,25}(\.[0-9]{1,5})?([eE][+-]?[0-9]{1,4})?", fullmatch=True),
    st.sampled_from(["INF", "-INF", "NaN", "true", "false", "1", "0", "P1Y2M", "2024-02-29T12:00:00Z", "--12"]),
    st.text(max_size=30),
)
INPUTS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.decimals(allow_nan=False, allow_infinity=False, places=None),
    LEXICAL,
    st.lists(st.integers(), max_size=2),
)


@FAST
@given(st.sampled_from(VALUE_TYPES), INPUTS)
def test_coercion_gives_the_exact_value_or_a_type_mismatch(value_type: Any, value: Any) -> None:
    result = outcome(lambda: values.coerce(value_type, value), TypeMismatchError)
    if isinstance(result, TypeMismatchError):
        assert str(result)
        return
    assert isinstance(result, value_type)
    if isinstance(value, bool):
        assert result is value
    elif isinstance(value, str) and value_type in INTEGER_TYPES:
        assert result == decimal.Decimal(value.strip()), f"{value!r} became {result!r}"
    elif value_type in INTEGER_TYPES and isinstance(value, int | float | decimal.Decimal):
        assert result == value, f"{value!r} became {result!r}"
    elif isinstance(result, decimal.Decimal) and isinstance(value, int | float | decimal.Decimal):
        assert float(result) == float(value)
    elif isinstance(result, float) and isinstance(value, int | float | decimal.Decimal):
        assert result == float(value) or (math.isnan(result) and math.isnan(float(value)))


@FAST
@given(st.sampled_from(INTEGER_TYPES), st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)))
def test_a_fraction_is_never_truncated_to_an_integer(value_type: Any, value: float) -> None:
    try:
        values.coerce(value_type, value)
    except TypeMismatchError:
        return
    raise AssertionError(f"{value!r} was accepted as {datatypes.XSD_TYPE_NAMES[value_type]}")


# --- the exchange reader on mutated documents (exchange/package.py) -------------------------------------------


def _reference(value: str) -> model.ExternalReference:
    return model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, value),))


def _sample_objects() -> list[model.Identifiable]:
    submodel = model.Submodel(
        "urn:example:sm:fuzz",
        id_short="Fuzz",
        semantic_id=_reference("urn:example:semantics:fuzz"),
        submodel_element=[
            model.Property("Speed", model.datatypes.Int, 3, semantic_id=_reference("urn:example:speed")),
            model.File("Manual", content_type="application/pdf", value="/aasx/files/manual.pdf"),
            model.SubmodelElementCollection(
                "Motor",
                value=[
                    model.MultiLanguageProperty(
                        "Name", value=model.MultiLanguageTextType({"en": "motor", "de": "Motor"})
                    ),
                    model.Range("Limits", model.datatypes.Double, 1.0, 2.0),
                ],
            ),
            model.SubmodelElementList(
                "Readings",
                model.Property,
                value_type_list_element=model.datatypes.Int,
                value=[model.Property(None, model.datatypes.Int, 1), model.Property(None, model.datatypes.Int, 2)],
            ),
            model.Entity(
                "Drive",
                model.EntityType.SELF_MANAGED_ENTITY,
                global_asset_id="urn:example:asset:drive",
                statement=[model.Property("Serial", model.datatypes.String, "A-1")],
            ),
            model.Operation("Start", input_variable=[model.Property("Ramp", model.datatypes.Double)]),
            model.Blob("Logo", content_type="image/png", value=b"\x89PNG"),
            model.ReferenceElement("Datasheet", value=_reference("urn:example:datasheet")),
            model.AnnotatedRelationshipElement(
                "Feeds",
                first=_reference("urn:example:a"),
                second=_reference("urn:example:b"),
                annotation=[model.Property("Rate", model.datatypes.Double, 0.5)],
            ),
        ],
    )
    shell = model.AssetAdministrationShell(
        model.AssetInformation(
            global_asset_id="urn:example:asset:fuzz", default_thumbnail=model.Resource("/aasx/thumb.png", "image/png")
        ),
        "urn:example:aas:fuzz",
        id_short="FuzzShell",
        description=model.MultiLanguageTextType({"en": "a shell"}),
        submodel={model.ModelReference.from_referable(submodel)},
    )
    concept = model.ConceptDescription("urn:example:cd:speed", id_short="Speed")
    return [shell, submodel, concept]


SAMPLE = _sample_objects()
SAMPLE_JSON: dict[str, Any] = json.loads(write_package(SAMPLE, {}, "json"))
SAMPLE_XML = write_package(SAMPLE, {}, "xml")
SAMPLE_AASX = write_package(SAMPLE, {"/aasx/files/manual.pdf": (b"%PDF-1.7" * 50, "application/pdf")}, "aasx")

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        ["", "EMPTY", "Property", "Submodel", "xs:int", "/../etc/passwd", "C:\\x", "a\x00b", "\ufffe", "en", "x" * 300]
    ),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.sampled_from(["modelType", "value", "idShort", "keys", "type", "valueType", "x"]), children, max_size=3
        ),
    ),
    max_leaves=8,
)
SNIPPETS = st.sampled_from(
    [
        b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>",
        b"&e;",
        b"<a>" * 300,
        b"</environment>",
        b"\x00",
        b"\xff\xfe",
        b"<![CDATA[",
        b"]]>",
        b"<!--",
        b"{",
        b'"',
        b"PK\x03\x04",
        b"&#0;",
    ]
)


def _containers(node: Any) -> list[Any]:
    found: list[Any] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict | list) and current:
            found.append(current)
            stack.extend(current.values() if isinstance(current, dict) else current)
    return found


def _read_both_ways(data: bytes, filename: str) -> None:
    """Lenient and strict reads: a result, or ``PackageError`` (``ImportRejected`` included), nothing else."""
    for strict in (False, True):
        result = outcome(functools.partial(read_package, data, filename, strict=strict), PackageError)
        if isinstance(result, PackageError):
            assert str(result)
            continue
        assert isinstance(result, ImportResult)
        for issue in result.report.issues:
            assert issue.path or issue.message


@SLOW
@given(st.data())
def test_mutated_json_documents_are_read_or_refused_as_package_errors(data: st.DataObject) -> None:
    document = copy.deepcopy(SAMPLE_JSON)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4), label="mutations")):
        container = data.draw(st.sampled_from(_containers(document)), label="container")
        replacement = data.draw(JSON_VALUES, label="replacement")
        if isinstance(container, dict):
            key = data.draw(st.sampled_from([*container, "modelType", "value", "idShort"]), label="key")
            if data.draw(st.booleans(), label="delete") and key in container:
                del container[key]
            else:
                container[key] = replacement
        else:
            container[data.draw(st.integers(min_value=0, max_value=len(container) - 1), label="index")] = replacement
    _read_both_ways(json.dumps(document).encode(), "fuzz.json")


def _mutated_bytes(data: st.DataObject, original: bytes) -> bytes:
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(min_value=1, max_value=5), label="edits")):
        position = data.draw(st.integers(min_value=0, max_value=len(mutated)), label="position")
        edit = data.draw(st.sampled_from(["byte", "delete", "snippet"]), label="edit")
        if edit == "byte" and position < len(mutated):
            mutated[position] = data.draw(st.integers(min_value=0, max_value=255), label="value")
        elif edit == "delete":
            del mutated[position : position + data.draw(st.integers(min_value=1, max_value=64), label="length")]
        else:
            mutated[position:position] = data.draw(SNIPPETS, label="snippet")
    return bytes(mutated)


@SLOW
@given(st.data())
def test_mutated_xml_documents_are_read_or_refused_as_package_errors(data: st.DataObject) -> None:
    _read_both_ways(_mutated_bytes(data, SAMPLE_XML), "fuzz.xml")


@SLOW
@given(st.data())
def test_mutated_aasx_packages_are_read_or_refused_as_package_errors(data: st.DataObject) -> None:
    _read_both_ways(_mutated_bytes(data, SAMPLE_AASX), "fuzz.aasx")


# --- mapping files (mapping/schema.py) ---------------------------------------------------------------------

DEMO_DATA: dict[str, Any] = yaml.safe_load(DEMO_MAPPING.read_text(encoding="utf-8"))
SMALL_DEMO: dict[str, Any] = {"devices": DEMO_DATA["devices"], "points": DEMO_DATA["points"][:3]}
SOURCE = "fuzz-mapping.yaml"


def _assert_located(error: MappingError, source: str) -> None:
    text = str(error)
    assert text
    for line in text.splitlines():
        assert line.startswith(source), f"a line without its location: {line!r}"


@FAST
@given(JSON_VALUES)
def test_any_document_is_a_mapping_or_a_located_mapping_error(document: Any) -> None:
    result = outcome(lambda: parse_mapping(document, SOURCE), MappingError)
    if isinstance(result, MappingError):
        _assert_located(result, SOURCE)


@SLOW
@given(st.data())
def test_a_mutated_mapping_file_is_valid_or_a_located_mapping_error(data: st.DataObject) -> None:
    document = copy.deepcopy(SMALL_DEMO)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="mutations")):
        container = data.draw(st.sampled_from(_containers(document)), label="container")
        replacement = data.draw(JSON_VALUES, label="replacement")
        if isinstance(container, dict):
            key = data.draw(st.sampled_from(sorted(container, key=str)), label="key")
            container[key] = replacement
        else:
            container[data.draw(st.integers(min_value=0, max_value=len(container) - 1), label="index")] = replacement
    result = outcome(lambda: parse_mapping(document, SOURCE), MappingError)
    if isinstance(result, MappingError):
        _assert_located(result, SOURCE)


@FAST
@given(st.text(alphabet=st.sampled_from("ab:- \n\t[]{}&*!|>'\"#%@`,?0"), max_size=60))
def test_a_mapping_file_with_any_text_loads_or_names_the_file(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "mapping.yaml"
        path.write_text(text, encoding="utf-8")
        result = outcome(lambda: load_mapping(path), MappingError)
        if isinstance(result, MappingError):
            _assert_located(result, str(path))


# --- base64url identifiers (api/serialization.py) ----------------------------------------------------------


@FAST
@given(st.text(min_size=1, max_size=200))
def test_an_identifier_survives_base64url_in_a_path(identifier: str) -> None:
    encoded = encode_identifier(identifier)
    assert set(encoded) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_identifier(encoded, "id") == identifier
    assert decode_identifier(encoded + "=" * (-len(encoded) % 4), "id") == identifier


@FAST
@given(st.one_of(st.text(max_size=40), st.text(alphabet=st.sampled_from("AZaz09-_=+/."), max_size=40)))
def test_any_path_segment_decodes_or_is_a_bad_request(text: str) -> None:
    decoded = outcome(lambda: decode_identifier(text, "id"), InvalidRequestError)
    if isinstance(decoded, Exception):
        assert str(decoded)
        return
    assert decoded


@contextmanager
def served_in_thread(build: Callable[[], Awaitable[web.Application]]) -> Iterator[int]:
    """The app ``build`` makes, served on a loopback port by an event loop in a thread of its own, so that
    hypothesis (which calls the test synchronously) can drive it; yields the port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[web.AppRunner, int]:
        runner = web.AppRunner(await build(), access_log=None)
        await runner.setup()
        listener = socket.create_server(("127.0.0.1", 0))
        await web.SockSite(runner, listener).start()
        return runner, int(listener.getsockname()[1])

    runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


SUBMODEL_ID = "urn:example:sm:wire"
PATH_SEGMENT = st.one_of(
    st.text(alphabet=st.sampled_from("AZaz09-_=.~%[]²"), min_size=1, max_size=40),
    st.builds(encode_identifier, st.text(min_size=1, max_size=60)),
    st.builds(lambda text: encode_identifier(text) + "=", st.text(min_size=1, max_size=10)),
    st.builds(lambda digits: f"Speed[{digits}]", DIGITS),
)


async def _application() -> web.Application:
    store = TwinStore()
    await store.create(model.Submodel(SUBMODEL_ID, submodel_element=[model.Property("Speed", model.datatypes.Int, 1)]))
    return create_app(store)


def test_identifiers_and_id_short_paths_over_the_wire_are_found_or_refused_with_a_result() -> None:
    with served_in_thread(_application) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        @settings(derandomize=True, database=None, max_examples=150, deadline=2000)
        @given(PATH_SEGMENT, st.sampled_from(["submodel", "element"]))
        def check(segment: str, where: str) -> None:
            segment = urllib.parse.quote(segment, safe="=-_.~[]")
            if where == "submodel":
                url = f"/api/v3.0/submodels/{segment}"
            else:
                url = f"/api/v3.0/submodels/{encode_identifier(SUBMODEL_ID)}/submodel-elements/{segment}"
            connection.request("GET", url)
            response = connection.getresponse()
            body = response.read()
            if response.status == 200:
                return
            assert response.status in (400, 404, 405), (url, response.status, body[:200])
            message = orjson.loads(body)["messages"][0]
            assert message["text"]

        try:
            check()
        finally:
            connection.close()


# --- the main write routes over the wire: no body ever gets a 5xx -------------------------------------------

WRITE_SHELL = next(shell for shell in SAMPLE_JSON["assetAdministrationShells"])
WRITE_SUBMODEL = next(submodel for submodel in SAMPLE_JSON["submodels"])
EDGE_LEXICAL = st.sampled_from(
    [
        "99999-01-01",
        "99999-01-01T00:00:00Z",
        "-0001-01-01",
        "0000-01-01",
        "2024-02-30",
        "2024-13-01T25:61:61Z",
        "9999-12-31T23:59:59.9999999999+14:00",
        "99999",
        "--13",
        "P1Y2M3DT4H5M6.7S",
        "P",
        "1e99999",
        "-0",
        "NaN",
        "18446744073709551616",
        "",
    ]
)
VALUE_TYPE_NAMES = st.sampled_from(sorted(datatypes.XSD_TYPE_NAMES.values()))
WIRE_SCALARS = st.one_of(JSON_SCALARS, EDGE_LEXICAL, VALUE_TYPE_NAMES)
WIRE_VALUES = st.recursive(
    WIRE_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.sampled_from(["modelType", "value", "idShort", "keys", "type", "valueType", "min", "max", "x"]),
            children,
            max_size=3,
        ),
    ),
    max_leaves=8,
)
WRITE_ELEMENTS: list[dict[str, Any]] = WRITE_SUBMODEL["submodelElements"]
WRITE_ELEMENT_PATHS = ["Speed", "Commissioned", "Motor.Limits", "Readings[0]", "Motor"]
DATE_PROPERTY = {"modelType": "Property", "idShort": "Commissioned", "valueType": "xs:date", "value": "2020-01-01"}


def _mutated(data: st.DataObject, original: Any) -> Any:
    """A copy of the JSON value ``original`` with up to three values replaced, added or deleted anywhere in it."""
    document = copy.deepcopy(original)
    for _ in range(data.draw(st.integers(min_value=0, max_value=3), label="mutations")):
        containers = _containers(document)
        if not containers:
            return data.draw(WIRE_VALUES, label="whole body")
        container = data.draw(st.sampled_from(containers), label="container")
        replacement = data.draw(st.one_of(EDGE_LEXICAL, VALUE_TYPE_NAMES, WIRE_VALUES), label="replacement")
        if isinstance(container, dict):
            key = data.draw(st.sampled_from([*container, "modelType", "value", "valueType", "idShort"]), label="key")
            if data.draw(st.booleans(), label="delete") and key in container:
                del container[key]
            else:
                container[key] = replacement
        else:
            container[data.draw(st.integers(min_value=0, max_value=len(container) - 1), label="index")] = replacement
    return document


def _multipart(content: bytes, file_name: str) -> tuple[bytes, str]:
    boundary = "wire-property-test"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + content + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


WRITE_ROUTES = [
    "POST shell", "PUT shell", "POST submodel", "PUT submodel", "POST element", "PUT element",
    "PATCH $value", "PATCH $value", "POST package", "POST package strict",
]  # fmt: skip


def _write_request(data: st.DataObject) -> tuple[str, str, bytes, str]:
    """One write: method, URL, body and content type, from a route drawn from the main write routes."""
    shells, submodels = "/api/v3.0/shells", "/api/v3.0/submodels"
    submodel = f"{submodels}/{encode_identifier(SUBMODEL_ID)}"
    route = data.draw(st.sampled_from(WRITE_ROUTES), label="route")
    if route.endswith("shell"):
        body: Any = _mutated(data, WRITE_SHELL)
        url = shells if route.startswith("POST") else f"{shells}/{encode_identifier(WRITE_SHELL['id'])}"
    elif route.endswith("submodel"):
        body = _mutated(data, {**WRITE_SUBMODEL, "id": SUBMODEL_ID})
        url = submodels if route.startswith("POST") else submodel
    elif route.endswith("element"):
        body = _mutated(
            data, data.draw(st.sampled_from([*WRITE_ELEMENTS, DATE_PROPERTY, DATE_PROPERTY]), label="element")
        )
        path = data.draw(st.sampled_from(WRITE_ELEMENT_PATHS), label="path")
        url = f"{submodel}/submodel-elements" if route.startswith("POST") else f"{submodel}/submodel-elements/{path}"
    elif route == "PATCH $value":
        body = data.draw(st.one_of(EDGE_LEXICAL, WIRE_SCALARS, WIRE_VALUES), label="value")
        path = data.draw(st.sampled_from(["Commissioned", *WRITE_ELEMENT_PATHS]), label="path")
        url = f"{submodel}/submodel-elements/{path}/$value"
    else:
        environment = _mutated(data, {"submodels": [{**WRITE_SUBMODEL, "id": "urn:example:sm:packaged"}]})
        content, content_type = _multipart(json.dumps(environment).encode(), "wire.json")
        return (
            "POST",
            "/api/v3.0/packages" + ("?strict=true" if route.endswith("strict") else ""),
            content,
            content_type,
        )
    return route.split()[0], url, json.dumps(body).encode(), "application/json"


async def _write_application() -> web.Application:
    store = TwinStore()
    submodel = model.Submodel(
        SUBMODEL_ID,
        submodel_element=[
            model.Property("Speed", model.datatypes.Int, 1),
            model.Property("Commissioned", model.datatypes.Date, model.datatypes.Date(2020, 1, 1)),
            model.SubmodelElementCollection("Motor", value=[model.Range("Limits", model.datatypes.Double, 1.0, 2.0)]),
            model.SubmodelElementList(
                "Readings",
                model.Property,
                value_type_list_element=model.datatypes.Int,
                value=[model.Property(None, model.datatypes.Int, 1)],
            ),
        ],
    )
    await store.create(submodel)
    return create_app(store)


def test_no_body_on_the_main_write_routes_is_answered_with_a_5xx() -> None:
    """POST/PUT of shells, submodels and elements, PATCH ``$value`` and package uploads (lenient and strict):
    mutated valid bodies and generated values, XSD edge values among them (a 5-digit year), are stored or
    refused with a ``4xx`` ``Result`` naming the reason, never answered ``5xx``."""
    with served_in_thread(_write_application) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        @settings(
            derandomize=True,
            database=None,
            max_examples=400,
            deadline=2000,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.data())
        def check(data: st.DataObject) -> None:
            method, url, body, content_type = _write_request(data)
            connection.request(method, url, body=body, headers={"Content-Type": content_type})
            response = connection.getresponse()
            answer = response.read()
            assert response.status < 500, (method, url, body[:300], response.status, answer[:300])
            if response.status >= 400:
                assert orjson.loads(answer)["messages"][0]["text"], answer[:300]

        try:
            check()
        finally:
            connection.close()
