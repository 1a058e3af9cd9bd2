"""RDF export (Turtle, JSON-LD) and the read-only SPARQL endpoint over the live demo twin, on a real socket."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.compare import isomorphic
from rdflib.namespace import RDF, XSD

from aas_server.api.app import create_app
from aas_server.api.rdf import RDF_KEY, RdfService
from aas_server.api.serialization import encode_identifier
from aas_server.config import load_settings
from aas_server.model import twins
from aas_server.model.events import Quality, QualityReason, ValueChanged
from aas_server.persistence.sqlite import SqliteRepository
from aas_server.semantics.rdf import AAS, HUB, QueryLimits, build_graph, element_iri, rest_path, take_snapshot
from aas_server.store.twin_store import TwinStore
from tests.support import ROOT, eventually

Client = TestClient[web.Request, web.Application]

PLANT = ROOT / "examples" / "bottling-line" / "plant.yaml"
SENSOR = "urn:aas-server:demo:sm:filler-temperature-sensor:operational-data"
FILLER = "urn:aas-server:demo:sm:filler:operational-data"
APIS = ("/api/v3.0", "/api/v3.1")
SEMANTIC_KEY_VALUE = (
    "<https://admin-shell.io/aas/3/0/HasSemantics/semanticId>/"
    "<https://admin-shell.io/aas/3/0/Reference/keys>/<https://admin-shell.io/aas/3/0/Key/value>"
)
IDENTIFIABLE_ID = "<https://admin-shell.io/aas/3/0/Identifiable/id>"
CONTAINERS = {
    "SubmodelElementCollection": "value",
    "SubmodelElementList": "value",
    "Entity": "statements",
    "AnnotatedRelationshipElement": "annotations",
}
"""Where the REST JSON of each container kind keeps its children."""


@pytest.fixture
def store() -> TwinStore:
    twin_store = TwinStore()
    twin_store.add_all(twins.build_environment(twins.load_twins(PLANT)))
    return twin_store


@pytest.fixture
async def client(store: TwinStore) -> AsyncIterator[Client]:
    test_client: Client = TestClient(TestServer(create_app(store)))
    async with test_client:
        yield test_client


def described(graph: Graph) -> dict[URIRef, Graph]:
    """Each named node with its triples and those of the blank nodes below it (its concise bounded description)."""
    descriptions: dict[URIRef, Graph] = {}
    for subject in set(graph.subjects()):
        if isinstance(subject, BNode):
            continue
        assert isinstance(subject, URIRef)
        description = Graph()
        pending: list[Any] = [subject]
        while pending:
            for triple in graph.triples((pending.pop(), None, None)):
                description.add(triple)
                if isinstance(triple[2], BNode):
                    pending.append(triple[2])
        descriptions[subject] = description
    return descriptions


def assert_isomorphic(parsed: Graph, expected: Graph) -> None:
    """Graph isomorphism, decided per named node: our blank nodes form trees under named nodes (the
    descriptions partition the triples), so the graphs are isomorphic exactly when every named node's
    description is; ``isomorphic`` on the whole graph would take minutes on the demo's 3,000 blank nodes."""
    ours, theirs = described(expected), described(parsed)
    assert set(ours) == set(theirs)
    assert sum(len(description) for description in ours.values()) == len(expected) == len(parsed)
    different = [subject for subject in ours if not isomorphic(ours[subject], theirs[subject])]
    assert different == []


async def fetch_graph(client: Client, path: str, rdf_format: str, **headers: str) -> Graph:
    response = await client.get(path, headers=headers)
    assert response.status == 200, await response.text()
    graph = Graph()
    graph.parse(data=await response.text(), format=rdf_format)
    return graph


async def select(client: Client, query: str, api: str = APIS[0]) -> list[dict[str, str]]:
    response = await client.get(f"{api}/sparql", params={"query": query})
    assert response.status == 200, await response.text()
    assert response.content_type == "application/sparql-results+json"
    body = await response.json(content_type=None)
    return [{name: value["value"] for name, value in row.items()} for row in body["results"]["bindings"]]


async def assert_result(response: ClientResponse, status: int, *fragments: str) -> str:
    assert response.status == status, await response.text()
    body = await response.json()
    text: str = body["messages"][0]["text"]
    for fragment in fragments:
        assert fragment in text
    return text


# --- export ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning:rdflib")  # rdflib's JSON-LD parser uses its deprecated API
async def test_turtle_and_json_ld_exports_parse_back_into_the_live_graph(store: TwinStore, client: Client) -> None:
    expected = build_graph(take_snapshot(store)).graph
    turtle = await fetch_graph(client, f"{APIS[0]}/rdf", "turtle")
    assert_isomorphic(turtle, expected)
    json_ld = await fetch_graph(client, f"{APIS[1]}/rdf", "json-ld", Accept="application/ld+json")
    assert_isomorphic(json_ld, expected)
    by_parameter = await client.get(f"{APIS[0]}/rdf", params={"format": "jsonld"})
    assert by_parameter.content_type == "application/ld+json"

    temperature = element_iri(SENSOR, "Temperature")
    assert (temperature, RDF.type, AAS.Property) in turtle
    assert (temperature, AAS["Referable/idShort"], Literal("Temperature")) in turtle
    assert (temperature, AAS["Property/valueType"], AAS["DataTypeDefXsd/Double"]) in turtle
    assert (temperature, HUB.idShortPath, Literal("Temperature")) in turtle
    assert (temperature, HUB.quality, Literal("good")) in turtle
    submodel = URIRef(SENSOR)
    assert (submodel, RDF.type, AAS.Submodel) in turtle
    assert (submodel, AAS["Submodel/submodelElements"], temperature) in turtle
    assert (submodel, AAS["Identifiable/id"], Literal(SENSOR)) in turtle
    assert (temperature, HUB.submodel, submodel) in turtle
    keys = list(turtle.objects(temperature, AAS["HasSemantics/semanticId"] / AAS["Reference/keys"]))
    assert [turtle.value(key, AAS["Key/type"]) for key in keys] == [AAS["KeyTypes/GlobalReference"]]
    assert rest_path(str(temperature)) == f"submodels/{encode_identifier(SENSOR)}/submodel-elements/Temperature"


async def test_unknown_format_and_unacceptable_media_types_are_refused(client: Client) -> None:
    await assert_result(await client.get(f"{APIS[0]}/rdf", params={"format": "n3"}), 400, "format='n3'")
    refused = await client.get(f"{APIS[0]}/rdf", headers={"Accept": "application/rdf+xml"})
    await assert_result(refused, 406)


async def test_a_changed_value_shows_in_the_next_export_and_query(store: TwinStore, client: Client) -> None:
    query = f"""SELECT ?value ?quality ?reason ?time WHERE {{
        ?temperature hub:submodel/{IDENTIFIABLE_ID} "{SENSOR}" ; hub:idShortPath "Temperature" ;
            hub:value ?value ; hub:quality ?quality ; hub:sourceTimestamp ?time .
        OPTIONAL {{ ?temperature hub:qualityReason ?reason }} }}"""
    before = await select(client, query)
    service = client.app[RDF_KEY]
    builds = service.builds
    assert await select(client, query) == before
    assert service.builds == builds, "an unchanged twin is not rebuilt"

    source_time = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    store.apply(
        ValueChanged(
            SENSOR, "Temperature", 87.25, source_time, Quality.UNCERTAIN, QualityReason.LAST_USABLE, source_time, "x"
        )
    )
    rows = await select(client, query)
    assert rows == [
        {"value": "87.25", "quality": "uncertain", "reason": "last_usable", "time": source_time.isoformat()}
    ]
    exported = await fetch_graph(client, f"{APIS[0]}/rdf", "turtle")
    temperature = element_iri(SENSOR, "Temperature")
    assert exported.value(temperature, HUB.value) == Literal("87.25", datatype=XSD.double)
    assert exported.value(temperature, AAS["Property/value"]) == Literal("87.25")
    assert exported.value(temperature, HUB.quality) == Literal("uncertain")

    response = await client.patch(
        f"{APIS[1]}/submodels/{encode_identifier(FILLER)}/submodel-elements/FillVolumeSetpoint/$value", json=480.5
    )
    assert response.status == 204, await response.text()
    setpoint = await select(
        client,
        f'SELECT ?v WHERE {{ ?e hub:idShortPath "FillVolumeSetpoint" ; hub:submodel <{FILLER}> ; hub:value ?v }}',
    )
    assert setpoint == [{"v": "480.5"}]


# --- SPARQL against the REST API ---------------------------------------------------------------


def rest_elements(elements: list[dict[str, Any]], prefix: str = "", in_list: bool = False) -> Iterator[tuple[str, Any]]:
    """``(idShortPath, element JSON)`` of every element in a REST listing, depth first."""
    for index, element in enumerate(elements):
        if in_list:
            path = f"{prefix}[{index}]"
        else:
            path = f"{prefix}.{element['idShort']}" if prefix else element["idShort"]
        yield path, element
        children = CONTAINERS.get(element["modelType"])
        if children is not None:
            yield from rest_elements(element.get(children, []), path, element["modelType"] == "SubmodelElementList")


def key_values(element: dict[str, Any]) -> set[str]:
    return {key["value"] for key in element.get("semanticId", {}).get("keys", [])}


async def rest_json(client: Client, path: str, **params: str) -> Any:
    response = await client.get(f"{APIS[0]}{path}", params=params)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_sparql_finds_by_semantic_id_what_the_rest_api_finds(client: Client) -> None:
    """Every submodel semanticId: SPARQL finds the submodels ``GET /submodels?semanticId=`` finds. Every Property
    semanticId: SPARQL finds the (submodel, idShortPath) of the Properties with it in the REST API's element
    listings (Part 2 has a semanticId filter for submodels, none for elements). A found element's IRI is its
    REST path."""
    submodels = (await rest_json(client, "/submodels"))["result"]
    by_semantic_id: dict[str, set[tuple[str, str]]] = {}
    for submodel in submodels:
        listing = await rest_json(client, f"/submodels/{encode_identifier(submodel['id'])}/submodel-elements")
        for path, element in rest_elements(listing["result"]):
            if element["modelType"] == "Property":
                for value in key_values(element):
                    by_semantic_id.setdefault(value, set()).add((submodel["id"], path))
    assert len(by_semantic_id) > 20
    for semantic_id, expected in by_semantic_id.items():
        rows = await select(
            client,
            f"""SELECT ?submodel ?path ?element WHERE {{
                ?element a aas:Property ; {SEMANTIC_KEY_VALUE} {json.dumps(semantic_id)} ;
                    hub:idShortPath ?path ; hub:submodel/{IDENTIFIABLE_ID} ?submodel }}""",
        )
        assert {(row["submodel"], row["path"]) for row in rows} == expected, semantic_id
    in_lists = await select(
        client,
        'SELECT ?element ?path WHERE { ?element a aas:Property ; hub:idShortPath ?path FILTER(CONTAINS(?path, "[")) }',
    )
    assert in_lists
    for row in in_lists:
        element = await rest_json(client, "/" + str(rest_path(row["element"])))
        assert element["idShort"] == row["path"].rpartition(".")[2]

    for semantic_id in {value for submodel in submodels for value in key_values(submodel)}:
        found = await rest_json(client, "/submodels", semanticId=encode_identifier(semantic_id))
        rows = await select(
            client,
            f"SELECT ?id WHERE {{ ?s a aas:Submodel ; {SEMANTIC_KEY_VALUE} {json.dumps(semantic_id)} ; "
            f"{IDENTIFIABLE_ID} ?id }}",
        )
        assert {row["id"] for row in rows} == {submodel["id"] for submodel in found["result"]}, semantic_id


# --- SPARQL protocol ---------------------------------------------------------------------------


async def test_query_forms_over_get_and_both_kinds_of_post(client: Client) -> None:
    ask = await client.post(
        f"{APIS[1]}/sparql",
        data=f"ASK {{ <{SENSOR}> a aas:Submodel }}",
        headers={"Content-Type": "application/sparql-query"},
    )
    assert ask.status == 200
    assert await ask.json(content_type=None) == {"head": {}, "boolean": True}

    construct = await client.post(
        f"{APIS[0]}/sparql",
        data={"query": f"CONSTRUCT {{ ?e hub:value ?v }} WHERE {{ ?e hub:submodel <{SENSOR}> ; hub:value ?v }}"},
    )
    assert construct.status == 200
    assert construct.content_type == "text/turtle"
    graph = Graph().parse(data=await construct.text(), format="turtle")
    assert set(graph.subjects()) == {element_iri(SENSOR, "Temperature")}

    describe = await client.get(
        f"{APIS[0]}/sparql",
        params={"query": f"DESCRIBE <{SENSOR}>"},
        headers={"Accept": "application/ld+json"},
    )
    assert describe.status == 200
    assert describe.content_type == "application/ld+json"
    assert SENSOR in await describe.text()

    wrong_type = await client.post(f"{APIS[0]}/sparql", data=b"ASK {}", headers={"Content-Type": "text/plain"})
    await assert_result(wrong_type, 415)
    await assert_result(await client.get(f"{APIS[0]}/sparql"), 400, "no query")


async def test_updates_are_refused_and_change_nothing(client: Client) -> None:
    update = "INSERT DATA { <urn:example:a> <urn:example:b> <urn:example:c> }"
    direct = await client.post(f"{APIS[0]}/sparql", data=update, headers={"Content-Type": "application/sparql-query"})
    await assert_result(direct, 400, "SPARQL Update is not accepted")
    await assert_result(await client.post(f"{APIS[0]}/sparql", data={"update": update}), 400, "read-only")
    await assert_result(await client.get(f"{APIS[0]}/sparql", params={"update": update}), 400, "read-only")
    update_content = await client.post(
        f"{APIS[0]}/sparql", data=update, headers={"Content-Type": "application/sparql-update"}
    )
    await assert_result(update_content, 415)
    ask = await client.get(f"{APIS[0]}/sparql", params={"query": "ASK { <urn:example:a> ?p ?o }"})
    assert await ask.json(content_type=None) == {"head": {}, "boolean": False}


async def test_malformed_and_unsupported_queries_are_answered_400(client: Client) -> None:
    malformed = await client.get(f"{APIS[0]}/sparql", params={"query": "SELECT ?x WHERE {\n  ?x ?y \n"})
    await assert_result(malformed, 400, "malformed SPARQL query: line 2, column")
    unknown_prefix = await client.get(f"{APIS[0]}/sparql", params={"query": "SELECT * WHERE { ?s foo:bar ?o }"})
    await assert_result(unknown_prefix, 400, "foo")
    service = "SELECT * WHERE { SERVICE <http://127.0.0.1:9/sparql> { ?s ?p ?o } }"
    await assert_result(await client.get(f"{APIS[0]}/sparql", params={"query": service}), 400, "SERVICE")
    loading = "SELECT * FROM <http://127.0.0.1:9/data.ttl> WHERE { ?s ?p ?o }"
    await assert_result(await client.get(f"{APIS[0]}/sparql", params={"query": loading}), 400, "FROM")
    named = "SELECT * WHERE { GRAPH ?g { ?s ?p ?o } }"
    await assert_result(await client.get(f"{APIS[0]}/sparql", params={"query": named}), 400, "GRAPH")
    too_long = "ASK { ?s ?p ?o }" + " " * 20_000
    await assert_result(await client.post(f"{APIS[0]}/sparql", data={"query": too_long}), 400, "characters")


async def test_limits_a_query_over_time_and_a_result_over_size(store: TwinStore) -> None:
    app = create_app(store)
    app[RDF_KEY] = RdfService(store, QueryLimits(time_budget=0.5, max_rows=50, max_triples=50), query_workers=1)
    async with TestClient(TestServer(app)) as limited:
        everything = await limited.get(f"{APIS[0]}/sparql", params={"query": "SELECT * WHERE { ?s ?p ?o }"})
        await assert_result(everything, 400, "more than 50 rows", "LIMIT")
        limited_rows = await limited.get(f"{APIS[0]}/sparql", params={"query": "SELECT * WHERE { ?s ?p ?o } LIMIT 50"})
        assert limited_rows.status == 200
        construct = "CONSTRUCT { ?s ?p ?o } WHERE { ?s a aas:Property ; ?p ?o }"
        await assert_result(await limited.get(f"{APIS[0]}/sparql", params={"query": construct}), 400, "triples")

        endless = "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }"
        started = time.monotonic()
        overrun = await limited.get(f"{APIS[0]}/sparql", params={"query": endless})
        await assert_result(overrun, 503, "time budget of 0.5 s")
        assert time.monotonic() - started < 5.0
        # The one worker is free again (the overrunning query stopped by itself); queries queue for it.
        asks = await asyncio.gather(
            *(limited.get(f"{APIS[0]}/sparql", params={"query": f"ASK {{ <{SENSOR}> ?p ?o }}"}) for _ in range(4))
        )
        assert [ask.status for ask in asks] == [200] * 4


async def latencies_while(client: Client, work: asyncio.Task[ClientResponse]) -> list[float]:
    """Seconds each of a second client's REST reads took, sent one after another for as long as ``work`` runs."""
    latencies: list[float] = []
    while not work.done() or len(latencies) < 3:
        started = time.monotonic()
        response = await client.get(f"{APIS[0]}/submodels/{encode_identifier(SENSOR)}/submodel-elements/Temperature")
        assert response.status == 200, await response.text()
        await response.read()
        latencies.append(time.monotonic() - started)
    return latencies


@pytest.mark.parametrize(
    ("text", "status"),
    [
        pytest.param("a" * 26 + "!", 200, id="issue-11 pattern, 27 characters"),
        pytest.param("a" * 40 + "!", 503, id="42 characters, exponential on any backtracking engine"),
    ],
)
async def test_a_pathological_regex_neither_stalls_other_clients_nor_outlives_its_budget(
    store: TwinStore, text: str, status: int
) -> None:
    """``^(a+)+$`` took ``re`` 2.4 s for 27 characters, holding the GIL: every other client waited. The
    second pattern is exponential for the ``regex`` engine too: its timeout (the rest of the budget) ends it."""
    app = create_app(store)
    app[RDF_KEY] = RdfService(store, QueryLimits(time_budget=1.5), query_workers=1)
    pattern = "^(a+)+$" if status == 200 else "^(a|aa)+$"
    query = f'SELECT ?x WHERE {{ BIND("{text}" AS ?x) FILTER(REGEX(?x, "{pattern}")) }}'
    async with TestClient(TestServer(app)) as hub:
        await select(hub, "SELECT * WHERE { ?s ?p ?o } LIMIT 1")  # the graph is built before the clock starts
        started = time.monotonic()
        pathological = asyncio.create_task(hub.get(f"{APIS[0]}/sparql", params={"query": query}))
        latencies = await latencies_while(hub, pathological)
        answer = await pathological
        seconds = time.monotonic() - started
        if status == 200:
            assert (await answer.json(content_type=None))["results"]["bindings"] == []
        else:
            await assert_result(answer, 503, "time budget of 1.5 s")
        assert seconds < 1.5 + 1.5, f"the query was answered after {seconds:.2f} s"
        assert max(latencies) < 1.0, f"the other client waited {max(latencies):.2f} s"
        # The one worker becomes free: the match stopped (``regex`` counts its timeout in CPU time,
        # so on a loaded machine that may be a little after the answer).
        matching = f'SELECT ?x WHERE {{ BIND("aaa" AS ?x) FILTER(REGEX(?x, "{pattern}")) }}'
        found = await eventually(
            lambda: hub.get(f"{APIS[0]}/sparql", params={"query": matching}), lambda answer: answer.status == 200, 10
        )
        assert (await found.json(content_type=None))["results"]["bindings"] == [
            {"x": {"type": "literal", "value": "aaa"}}
        ]


async def test_regex_flags_replace_and_bad_patterns(client: Client) -> None:
    rows = await select(
        client,
        'SELECT ?hit ?replaced WHERE { BIND(REGEX("Filler TEMP", "temp$", "i") AS ?hit) '
        'BIND(REPLACE("a-b-c", "(\\\\w)-", "$1+") AS ?replaced) }',
    )
    assert rows == [{"hit": "true", "replaced": "a+b+c"}]
    literal = await select(client, 'SELECT ?hit WHERE { BIND(REGEX("a.c", ".", "q") AS ?hit) }')
    assert literal == [{"hit": "true"}]
    broken = 'SELECT * WHERE { ?s ?p ?o FILTER(REGEX(STR(?o), "(unclosed")) }'
    await assert_result(await client.get(f"{APIS[0]}/sparql", params={"query": broken}), 400, "(unclosed")
    flags = 'ASK { FILTER(REGEX("a", "a", "k")) }'
    await assert_result(await client.get(f"{APIS[0]}/sparql", params={"query": flags}), 400, "unknown flag 'k'")


async def test_a_string_doubled_by_concat_is_refused_before_it_fills_memory(client: Client) -> None:
    """Each BIND doubles the string: 40 of them would ask for 64 TiB; 15 already pass the 1 MiB limit."""
    binds = " ".join(f"BIND(CONCAT(?v{index}, ?v{index}) AS ?v{index + 1})" for index in range(15))
    query = f'SELECT (STRLEN(?v15) AS ?n) WHERE {{ BIND("{"x" * 64}" AS ?v0) {binds} }}'
    response = await client.get(f"{APIS[0]}/sparql", params={"query": query})
    await assert_result(response, 400, "string of", "at most 1048576")


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("SELECT * WHERE " + "{" * 3000 + "?s ?p ?o" + "}" * 3000, id="3000 braces"),
        pytest.param("SELECT * WHERE { ?s ?p ?o FILTER(" + "(" * 500 + "1" + ")" * 500 + ") }", id="500 parentheses"),
        pytest.param("SELECT * WHERE { ?s ?p ?o FILTER(1" + "-(1" * 40 + ")" * 40 + ") }", id="40 subtractions"),
    ],
)
async def test_a_deeply_nested_query_is_answered_400_naming_the_place(client: Client, query: str) -> None:
    response = await client.post(f"{APIS[0]}/sparql", data=query, headers={"Content-Type": "application/sparql-query"})
    await assert_result(response, 400, "deeper than 16 levels", "line 1, column")
    nested = "SELECT * WHERE { ?s ?p ?o " + "OPTIONAL { ?s ?p ?o " * 15 + "}" * 15 + "} LIMIT 1"
    assert len(await select(client, nested)) == 1
    strings = 'SELECT ?x WHERE { BIND("' + "((((" * 10 + '" AS ?x) } # ' + "{" * 40
    assert await select(client, strings) == [{"x": "((((" * 10}]


# --- command line ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning:rdflib")
async def test_cli_exports_the_model_with_its_last_values_as_turtle_and_json_ld(tmp_path: Path) -> None:
    settings_path = tmp_path / "hub.yaml"
    settings_path.write_text(f"data_dir: {tmp_path / 'data'}\ntwins:\n  - {PLANT}\n", encoding="utf-8")
    settings = load_settings(settings_path)
    source_time = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
    async with SqliteRepository(settings.sqlite_path) as repository:
        await repository.save_identifiables(twins.build_environment(twins.load_twins(PLANT)))
        await repository.persist_values(
            [ValueChanged(SENSOR, "Temperature", 64.5, source_time, Quality.GOOD, QualityReason.NONE, source_time, "x")]
        )
    turtle_file, json_ld_file = tmp_path / "plant.ttl", tmp_path / "plant.json"
    command = [sys.executable, "-m", "aas_server", "export", "--config", str(settings_path)]
    results = await asyncio.gather(
        asyncio.to_thread(subprocess.run, [*command, str(turtle_file)], capture_output=True, text=True, timeout=120),
        asyncio.to_thread(
            subprocess.run,
            [*command, str(json_ld_file), "--format", "jsonld"],
            capture_output=True,
            text=True,
            timeout=120,
        ),
    )
    for result in results:
        assert result.returncode == 0, result.stderr
        assert "60 identifiables with their last values" in result.stdout
    turtle = Graph().parse(turtle_file, format="turtle")
    assert_isomorphic(Graph().parse(json_ld_file, format="json-ld"), turtle)
    temperature = element_iri(SENSOR, "Temperature")
    assert turtle.value(temperature, HUB.value) == Literal("64.5", datatype=XSD.double)
    assert turtle.value(temperature, HUB.sourceTimestamp) == Literal(source_time)
    assert turtle.value(element_iri(FILLER, "BottlesFilled"), HUB.sourceTimestamp) is None, "never persisted"
