"""The attack corpus of issue 7: hostile input through every entry point that parses it, against a real server.

The server (``tests/attacks/server.py``) is the hub's REST application with its default limits, alone
in a process on a loopback port. Every attack is generated here at test time and sent while a
bystander client keeps reading a value; each must be answered with a ``4xx`` AAS ``Result`` naming
the problem, within ``ATTACK_SECONDS``, with the server's peak resident memory growing by no more
than ``MEMORY_BOUND``, and the bystander must get every answer, each within ``BYSTANDER_SECONDS``.
The ``aas-server import`` command gets the file attacks and must exit with status 2, naming each file.

Entry points: REST ``POST``/``PUT``/``PATCH`` of shells, submodels, elements, concept descriptions,
asset information and ``$value`` (JSON), ``POST``/``PUT /packages`` (multipart AASX, JSON, XML),
``PUT .../attachment`` and ``.../thumbnail`` (multipart), ``GET /serialization`` (identifiers in
the query), identifiers and idShort paths in the URL, and the ``import`` command. The OPC UA
NodeSet2 loader reads only the hub's own type model, never a user's file, so it is not attacked.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import time
import warnings
import zipfile
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientError, ClientResponse, ClientSession, ClientTimeout, FormData
from aiohttp.payload import AsyncIterablePayload
from basyx.aas import model

from aas_server.api.app import DEFAULT_CLIENT_MAX_SIZE
from aas_server.api.serialization import encode_identifier
from aas_server.exchange import write_package
from tests.attacks.server import SHELL_ID, SUBMODEL_ID
from tests.support import ROOT, wait_until

ATTACK_SECONDS = 1.0
"""Longest time from sending an attack to having the whole rejection."""

MEMORY_BOUND = 64 * 1024 * 1024
"""Largest growth of the server's peak resident memory (VmHWM) during one attack."""

BYSTANDER_SECONDS = 0.5
"""Longest time the bystander may wait for an answer while an attack runs."""

BODY_LIMIT = DEFAULT_CLIENT_MAX_SIZE
MIB = 1024 * 1024
API = "/api/v3.0"
SHELL = f"{API}/shells/{encode_identifier(SHELL_ID)}"
SUBMODEL = f"{API}/submodels/{encode_identifier(SUBMODEL_ID)}"
ELEMENTS = f"{SUBMODEL}/submodel-elements"
NAMESPACE = "https://admin-shell.io/aas/3/1"
EXIT_INVALID = 2


# --- the attacked server ----------------------------------------------------------------------------


@dataclass
class AttackedServer:
    process: subprocess.Popen[str]
    url: str
    log: Path

    def _status(self, field_name: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field_name} in /proc/{self.process.pid}/status")

    def peak_memory(self) -> int:
        """The process's peak resident memory in bytes (Linux ``VmHWM``)."""
        return self._status("VmHWM")

    def reset_peak_memory(self) -> None:
        """Set the peak back to the current resident memory where the kernel allows it (``clear_refs``)."""
        # Without it the peak only grows, and an attack's growth is measured from the highest peak so far.
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackedServer]:
    if not Path("/proc/self/status").exists():
        pytest.skip("the attack corpus measures memory through /proc (Linux)")
    log = tmp_path_factory.mktemp("attacks") / "server.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.attacks.server"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert process.stdout is not None
    assert process.stdin is not None
    line = process.stdout.readline()
    if not line.startswith("PORT "):
        process.kill()
        process.wait()
        pytest.fail(f"the attack server did not start: {log.read_text()}")
    yield AttackedServer(process, f"http://127.0.0.1:{int(line.split()[1])}", log)
    process.stdin.close()
    try:
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    assert "unexpected error" not in log.read_text(), log.read_text()


class Bystander:
    """Another client reading a Property's ``$value`` in a loop for as long as an attack runs."""

    def __init__(self, url: str) -> None:
        self.url = f"{url}{ELEMENTS}/Speed/$value"
        self.answers: list[tuple[int, float]] = []
        self._stop = asyncio.Event()
        self._session = ClientSession(timeout=ClientTimeout(total=10))
        self._task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                async with self._session.get(self.url) as response:
                    await response.read()
                    status = response.status
            except (ClientError, TimeoutError):
                status = -1
            self.answers.append((status, time.monotonic() - started))

    async def __aenter__(self) -> Bystander:
        self._task = asyncio.create_task(self._read())
        await wait_until(lambda: len(self.answers) >= 2, within=5, what="the bystander's first answers")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop after three more answers, so that the server is seen serving after the attack too."""
        wanted = len(self.answers) + 3
        try:
            await wait_until(lambda: len(self.answers) >= wanted, within=5, what="the bystander's answers")
        finally:
            self._stop.set()
            assert self._task is not None
            await self._task
            await self._session.close()


@dataclass
class Outcome:
    """What the attacker and the bystander saw."""

    status: int
    content_type: str
    body: bytes
    seconds: float
    memory_growth: int
    bystander: list[tuple[int, float]] = field(default_factory=list)

    def message(self) -> str:
        assert self.content_type == "application/json", (self.status, self.body[:300])
        document = json.loads(self.body)
        assert set(document) == {"messages"}
        text: str = document["messages"][0]["text"]
        assert text
        return text


async def run_attack(server: AttackedServer, send: Callable[[ClientSession], Awaitable[ClientResponse]]) -> Outcome:
    """Send one attack while the bystander reads; measure the answer time and the server's peak memory."""
    async with ClientSession(timeout=ClientTimeout(total=30)) as attacker, Bystander(server.url) as bystander:
        server.reset_peak_memory()
        before = server.peak_memory()
        started = time.monotonic()
        async with await send(attacker) as response:
            body = await response.read()
        seconds = time.monotonic() - started
        status, content_type = response.status, response.content_type
    return Outcome(status, content_type, body, seconds, server.peak_memory() - before, bystander.answers)


def assert_served_others(server: AttackedServer, outcome: Outcome) -> None:
    assert server.process.poll() is None, "the server died"
    statuses = [status for status, _ in outcome.bystander]
    assert all(status == 200 for status in statuses), f"bystander answers: {statuses}"
    slowest = max(latency for _, latency in outcome.bystander)
    assert slowest < BYSTANDER_SECONDS, f"the bystander waited {slowest:.3f} s"


def assert_rejected(server: AttackedServer, outcome: Outcome, status: int, reason: str) -> None:
    assert outcome.status == status, (outcome.status, outcome.body[:500])
    assert reason.lower() in outcome.message().lower(), outcome.message()
    assert outcome.seconds < ATTACK_SECONDS, f"answered after {outcome.seconds:.3f} s"
    assert outcome.memory_growth < MEMORY_BOUND, f"peak memory grew by {outcome.memory_growth / 2**20:.0f} MiB"
    assert_served_others(server, outcome)


# --- the corpus: JSON ------------------------------------------------------------------------------------


def deep_json_arrays(depth: int = 100_000) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_json_objects(depth: int = 100_000) -> bytes:
    return b'{"value":' * depth + b"1" + b"}" * depth


def nested_collections(levels: int) -> bytes:
    """Valid JSON of ``levels`` SubmodelElementCollections, each inside the previous one (two JSON levels each)."""
    head = b'{"modelType":"SubmodelElementCollection","idShort":"Level","value":['
    return head * levels + b"]}" * levels


def property_body(value: str = "1", value_type: str = "xs:string", id_short: str = "Pressure", **extra: Any) -> bytes:
    return json.dumps(
        {"modelType": "Property", "idShort": id_short, "valueType": value_type, "value": value, **extra}
    ).encode()


def file_body(value: str, id_short: str = "Datasheet") -> bytes:
    return json.dumps(
        {"modelType": "File", "idShort": id_short, "contentType": "application/pdf", "value": value}
    ).encode()


def submodel_body(identifier: str, **extra: Any) -> bytes:
    return json.dumps({"modelType": "Submodel", "id": identifier, **extra}).encode()


def oversized() -> io.BytesIO:
    """A body above the limit, sent with its Content-Length."""
    return io.BytesIO(b" " * (BODY_LIMIT + 1024 * 1024))


async def streamed(total: int = BODY_LIMIT + 1024 * 1024, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
    """A body sent with chunked transfer encoding (no Content-Length)."""
    sent = 0
    while sent < total:
        yield b" " * chunk
        sent += chunk


# --- the corpus: XML --------------------------------------------------------------------------------------


def environment_xml(inner: str = "") -> str:
    submodel = f"<submodel><id>{inner or 'urn:x'}</id></submodel>"
    return f'<environment xmlns="{NAMESPACE}"><submodels>{submodel}</submodels></environment>'


def xxe_external_entity() -> bytes:
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE environment [<!ENTITY secret SYSTEM "file:///etc/passwd">]>\n'
        + environment_xml("&secret;")
    ).encode()


def xxe_parameter_entity() -> bytes:
    return (
        '<?xml version="1.0"?>\n'
        '<!DOCTYPE environment [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd"> %remote;]>\n'
        + environment_xml()
    ).encode()


def xxe_external_dtd() -> bytes:
    return ('<?xml version="1.0"?>\n<!DOCTYPE environment SYSTEM "file:///etc/passwd">\n' + environment_xml()).encode()


def billion_laughs_dtd() -> str:
    entities = ['<!ENTITY lol0 "lol">']
    entities += [f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, 10)]
    return f"<!DOCTYPE environment [{''.join(entities)}]>"


def billion_laughs() -> bytes:
    return ('<?xml version="1.0"?>\n' + billion_laughs_dtd() + environment_xml("&lol9;")).encode()


def billion_laughs_after_a_long_comment() -> bytes:
    """The DTD behind a prolog longer than the DOCTYPE pre-scan (1 MiB): the parser's own limits must hold."""
    return ("<!--" + "x" * (2 * 1024 * 1024) + "-->" + billion_laughs_dtd() + environment_xml("&lol9;")).encode()


def deep_xml(depth: int = 100_000) -> bytes:
    return f'<environment xmlns="{NAMESPACE}">'.encode() + b"<a>" * depth + b"</a>" * depth + b"</environment>"


def whitespace_prolog() -> bytes:
    """Whitespace before broken XML: exponential for a DOCTYPE pattern with a nested quantifier."""
    return b" " * 60 + b"<environment"


# --- the corpus: AASX -------------------------------------------------------------------------------------


def sample_package(file_value: str = "/aasx/files/manual.pdf") -> bytes:
    """A package with one File element whose value is ``file_value``, written as a hostile vendor would.

    The hub's own writer renames values it could not export, so a hostile value is put into the
    written package afterwards.
    """
    stored = "/aasx/files/manual.pdf"
    submodel = model.Submodel(
        "urn:example:sm:uploaded",
        submodel_element=[model.File("Manual", content_type="application/pdf", value=stored)],
    )
    package = write_package([submodel], {stored: (b"%PDF-1.7", "application/pdf")}, "aasx")
    if file_value == stored:
        return package
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        data = archive.read("aasx/data.xml")
    hostile = data.replace(f"<aas:value>{stored}</aas:value>".encode(), f"<aas:value>{file_value}</aas:value>".encode())
    assert hostile != data, "the File value was not found in the written package"
    return repack(package, replace={"aasx/data.xml": hostile})


def repack(package: bytes, replace: dict[str, bytes] | None = None, extra: dict[str, bytes] | None = None) -> bytes:
    """A copy of a zip with entries replaced (by name) and entries added (deflated)."""
    replace = replace or {}
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(package)) as source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            target.writestr(entry.filename, replace.get(entry.filename, source.read(entry)))
        for name, content in (extra or {}).items():
            target.writestr(zipfile.ZipInfo(name), content, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def declare_size(package: bytes, name: str, size: int) -> bytes:
    """A copy of a zip whose directory (and local header) declares ``size`` unpacked bytes for ``name``."""
    data = bytearray(package)
    position = data.find(b"PK\x01\x02")
    while position != -1:
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, position + 28)
        if data[position + 46 : position + 46 + name_length].decode() == name:
            struct.pack_into("<I", data, position + 24, size)
            (local,) = struct.unpack_from("<I", data, position + 42)
            struct.pack_into("<I", data, local + 22, size)
            return bytes(data)
        position = data.find(b"PK\x01\x02", position + 46 + name_length + extra_length + comment_length)
    raise AssertionError(f"no entry {name!r}")


@dataclass(frozen=True)
class Member:
    """A zip member as stored: deflated data, the CRC-32 and the unpacked size its headers declare."""

    name: str
    data: bytes
    crc: int
    size: int

    @classmethod
    def of(cls, name: str, content: bytes) -> Member:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        return cls(name, compressor.compress(content) + compressor.flush(), zlib.crc32(content), len(content))

    @classmethod
    def zeros(cls, name: str, mebibytes: int, declared: int | None = None) -> Member:
        """``mebibytes`` MiB of zeros in about 1 KiB per MiB: one flushed deflate block repeated, then a final block."""
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        block = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
        crc = 0
        for _ in range(mebibytes):
            crc = zlib.crc32(bytes(MIB), crc)
        return cls(name, block * mebibytes + b"\x03\x00", crc, mebibytes * MIB if declared is None else declared)


def zip_archive(members: list[Member]) -> bytes:
    """A zip of deflated members, written field by field (APPNOTE 4.3.7, 4.3.12, 4.3.16)."""
    body, directory = bytearray(), bytearray()
    for member in members:
        name = member.name.encode()
        sizes = (member.crc, len(member.data), member.size)
        directory += struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, *sizes, len(name), 0, 0, 0, 0, 0, len(body)
        )
        directory += name
        body += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, *sizes, len(name), 0) + name + member.data
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), len(body), 0)
    return bytes(body + directory + end)


def sample_members(**replace: Member) -> list[Member]:
    """The members of ``sample_package()``, with some replaced (by name)."""
    with zipfile.ZipFile(io.BytesIO(sample_package())) as archive:
        members = [Member.of(entry.filename, archive.read(entry)) for entry in archive.infolist()]
    return [replace.get(member.name, member) for member in members]


def zip_bomb() -> bytes:
    """A supplementary file of 64 MiB of zeros in 64 KiB: ratio 1000."""
    return zip_archive([*sample_members(), Member.zeros("aasx/files/bomb.bin", 64)])


def many_small_bombs() -> bytes:
    """90 files of 1 MiB of zeros, each under the per-entry ratio check (1 MiB); 90 MiB from 100 KiB overall."""
    return zip_archive([*sample_members(), *(Member.zeros(f"aasx/files/{index}.bin", 1) for index in range(90))])


def huge_declared_size() -> bytes:
    return declare_size(sample_package(), "aasx/files/manual.pdf", 0xFFFFFFF0)


def understated_part() -> bytes:
    """The AAS part declares 100 bytes and inflates to 1 GiB."""
    return zip_archive(sample_members(**{"aasx/data.xml": Member.zeros("aasx/data.xml", 1024, declared=100)}))


def understated_content_types() -> bytes:
    """``[Content_Types].xml`` (read before the AAS parts) declares 100 bytes and inflates to 1 GiB."""
    name = "[Content_Types].xml"
    return zip_archive(sample_members(**{name: Member.zeros(name, 1024, declared=100)}))


def many_entries(count: int = 12_000) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index in range(count):
            archive.writestr(f"aasx/files/{index}", b"")
    return buffer.getvalue()


def with_entry(name: str) -> bytes:
    return repack(sample_package(), extra={name: b"pwned"})


def duplicate_entries() -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name", which is the point
        return repack(sample_package(), extra={"aasx/data.xml": b"<environment/>"})


def escaping_relationship() -> bytes:
    """The aas-spec relationship points out of the package."""
    package = sample_package()
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        rels = archive.read("aasx/_rels/aasx-origin.rels")
    return repack(
        package, replace={"aasx/_rels/aasx-origin.rels": rels.replace(b"/aasx/data.xml", b"/../../../etc/passwd")}
    )


def climbing_relationship() -> bytes:
    """The aas-spec relationship's relative target climbs above the package root (pyecma376_2: ``IndexError``)."""
    package = sample_package()
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        rels = archive.read("aasx/_rels/aasx-origin.rels")
    return repack(
        package, replace={"aasx/_rels/aasx-origin.rels": rels.replace(b"/aasx/data.xml", b"../../../data.xml")}
    )


FIVE_DIGIT_YEAR = "99999-01-01"
"""A valid ``xs:date`` (XSD allows years beyond 9999) that Python's ``datetime`` cannot hold: refused with 400."""


def five_digit_year_submodel() -> bytes:
    return submodel_body(
        "urn:example:sm:far-future",
        submodelElements=[json.loads(property_body(FIVE_DIGIT_YEAR, "xs:date", "Commissioned"))],
    )


def five_digit_year_environment() -> bytes:
    return json.dumps({"submodels": [json.loads(five_digit_year_submodel())]}).encode()


def package_form(content: bytes | io.BytesIO | AsyncIterablePayload, file_name: str) -> FormData:
    form = FormData()
    payload = io.BytesIO(content) if isinstance(content, bytes) else content
    form.add_field("file", payload, filename=file_name, content_type="application/octet-stream")
    return form


# --- the corpus as a table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    name: str
    method: str
    path: str
    body: Callable[[], Any]
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})

    def prepared(self, base: str) -> Callable[[ClientSession], Awaitable[ClientResponse]]:
        """Build the body now, before the clock starts, and return the step that sends it."""
        body = self.body()
        headers = self.headers if not isinstance(body, FormData) else {}
        return lambda session: session.request(self.method, base + self.path, data=body, headers=headers)


def upload(
    name: str, path: str, content: Callable[[], bytes | io.BytesIO], file_name: str, status: int, reason: str
) -> Attack:
    return Attack(name, "POST", path, lambda: package_form(content(), file_name), status, reason, {})


def streamed_upload() -> FormData:
    return package_form(AsyncIterablePayload(streamed()), "streamed.aasx")


PACKAGES = f"{API}/packages"
JSON_ATTACKS = [
    Attack("submodel: 100,000 nested arrays", "POST", f"{API}/submodels", deep_json_arrays, 400, "depth"),
    Attack("shell: 100,000 nested objects", "PUT", SHELL, deep_json_objects, 400, "depth"),
    Attack("element: 100,000 nested objects", "POST", ELEMENTS, deep_json_objects, 400, "depth"),
    Attack(
        "concept description: 100,000 nested", "POST", f"{API}/concept-descriptions", deep_json_arrays, 400, "depth"
    ),
    Attack("$value: 100,000 nested", "PATCH", f"{ELEMENTS}/Speed/$value", deep_json_arrays, 400, "depth"),
    Attack("element: 150 nested collections", "POST", ELEMENTS, lambda: nested_collections(150), 400, "nested deeper"),
    Attack("element: 64k idShort", "POST", ELEMENTS, lambda: property_body(id_short="a" * 65_536), 400, "128"),
    Attack(
        "element: 64k idShort ending in '-'",
        "POST",
        ELEMENTS,
        lambda: property_body(id_short="a-" * 32_768),
        400,
        "128",
    ),
    Attack("submodel: 1 MB id", "POST", f"{API}/submodels", lambda: submodel_body("u" * 1_000_000), 400, "2048"),
    Attack(
        "element: 1 MB xs:dateTime year",
        "POST",
        ELEMENTS,
        lambda: property_body("1" * 1_000_000 + "-01-01T00:00:00Z", "xs:dateTime"),
        400,
        "Property",
    ),
    Attack(
        "element: 5-digit xs:date year",
        "POST",
        ELEMENTS,
        lambda: property_body(FIVE_DIGIT_YEAR, "xs:date", "Commissioned2"),
        400,
        "outside 0001..9999",
    ),
    Attack(
        "element: 5-digit xs:dateTime year",
        "POST",
        ELEMENTS,
        lambda: property_body(FIVE_DIGIT_YEAR + "T00:00:00Z", "xs:dateTime", "Commissioned2"),
        400,
        "outside 0001..9999",
    ),
    Attack("submodel: 5-digit year", "POST", f"{API}/submodels", five_digit_year_submodel, 400, "0001..9999"),
    Attack(
        "$value: 5-digit year",
        "PATCH",
        f"{ELEMENTS}/Commissioned/$value",
        lambda: json.dumps(FIVE_DIGIT_YEAR).encode(),
        400,
        "outside 0001..9999",
    ),
    Attack(
        "$value: negative year",
        "PATCH",
        f"{ELEMENTS}/Commissioned/$value",
        lambda: json.dumps("-0001-01-01").encode(),
        400,
        "outside 0001..9999",
    ),
    Attack(
        "element: 1 MB xs:integer",
        "POST",
        ELEMENTS,
        lambda: property_body("9" * 1_000_000, "xs:integer"),
        400,
        "Property",
    ),
    Attack(
        "element: pathological language tag",
        "POST",
        ELEMENTS,
        lambda: property_body(description=[{"language": "x" + "-a" * 30_000 + "!", "text": "t"}]),
        400,
        "language",
    ),
    Attack("element: NUL in a value", "POST", ELEMENTS, lambda: property_body("a\u0000b"), 400, "AASd-130"),
    Attack(
        "element: lone surrogate",
        "POST",
        ELEMENTS,
        lambda: property_body().replace(b'"1"', b'"\\ud800"'),
        400,
        "surrogate",
    ),
    Attack("File: /../ value", "POST", ELEMENTS, lambda: file_body("/../../etc/passwd"), 400, "climbs above"),
    Attack("File: backslashes", "POST", ELEMENTS, lambda: file_body("..\\..\\secret.txt"), 400, "backslash"),
    Attack("File: drive letter", "POST", ELEMENTS, lambda: file_body("C:/Windows/win.ini"), 400, "drive letter"),
    Attack(
        "File: not normalised",
        "PUT",
        f"{ELEMENTS}/Manual",
        lambda: file_body("/aasx/files/../../aasx/x.pdf", "Manual"),
        400,
        "normal form",
    ),
    Attack(
        "thumbnail: /../ path",
        "PUT",
        f"{SHELL}/asset-information",
        lambda: json.dumps(
            {"assetKind": "Instance", "globalAssetId": "urn:a", "defaultThumbnail": {"path": "/../x.png"}}
        ).encode(),
        400,
        "climbs above",
    ),
    Attack("body: Content-Length above the limit", "POST", f"{API}/submodels", oversized, 413, "size"),
    Attack("body: streamed above the limit", "POST", f"{API}/submodels", streamed, 413, "size"),
    Attack("element path: 5,000 characters", "GET", f"{ELEMENTS}/{'a.' * 2_500}b", lambda: None, 400, "4096"),
    Attack("element path: superscript index", "GET", f"{ELEMENTS}/Speed[%C2%B2]", lambda: None, 400, "list index"),
    Attack("identifier: 40 kB", "GET", f"{API}/submodels/{'QUFB' * 10_000}", lambda: None, 404, "submodel"),
    Attack(
        "serialization: identifier not base64url",
        "GET",
        f"{API}/serialization?aasIds=%25%25",
        lambda: None,
        400,
        "base64url",
    ),
]
PACKAGE_ATTACKS = [
    upload("package: external entity (XXE)", PACKAGES, xxe_external_entity, "xxe.xml", 400, "DOCTYPE"),
    upload("package: parameter entity", PACKAGES, xxe_parameter_entity, "xxe.xml", 400, "DOCTYPE"),
    upload("package: external DTD", PACKAGES, xxe_external_dtd, "dtd.xml", 400, "DOCTYPE"),
    upload("package: billion laughs", PACKAGES, billion_laughs, "laughs.xml", 400, "DOCTYPE"),
    upload(
        "package: billion laughs behind 2 MB", PACKAGES, billion_laughs_after_a_long_comment, "laughs.xml", 400, "XML"
    ),
    upload("package: 100,000 nested XML elements", PACKAGES, deep_xml, "deep.xml", 400, "depth"),
    upload("package: 100,000 nested JSON arrays", PACKAGES, deep_json_arrays, "deep.json", 400, "nested"),
    upload("package: whitespace prolog", PACKAGES, whitespace_prolog, "prolog.xml", 400, "well-formed"),
    upload(
        "package: lone surrogate in JSON",
        PACKAGES,
        lambda: submodel_body("urn:x").replace(b'"urn:x"', b'"\\ud800"'),
        "s.json",
        400,
        "surrogate",
    ),
    upload(
        "package: XXE in the AAS part",
        PACKAGES,
        lambda: repack(sample_package(), replace={"aasx/data.xml": xxe_external_entity()}),
        "xxe.aasx",
        400,
        "DOCTYPE",
    ),
    upload(
        "package: XXE in [Content_Types].xml",
        PACKAGES,
        lambda: repack(sample_package(), replace={"[Content_Types].xml": xxe_external_dtd()}),
        "xxe.aasx",
        400,
        "DOCTYPE",
    ),
    upload("package: zip bomb (ratio 1000)", PACKAGES, zip_bomb, "bomb.aasx", 400, "compression ratio"),
    upload("package: 4 GB declared", PACKAGES, huge_declared_size, "huge.aasx", 400, "more than the limit"),
    upload("package: many small bombs (ratio 900)", PACKAGES, many_small_bombs, "bombs.aasx", 400, "ratio"),
    upload("package: AAS part of 100 B inflating to 1 GiB", PACKAGES, understated_part, "liar.aasx", 400, "CRC"),
    upload(
        "package: [Content_Types].xml inflating to 1 GiB", PACKAGES, understated_content_types, "liar.aasx", 400, "CRC"
    ),
    upload("package: 12,000 entries", PACKAGES, many_entries, "many.aasx", 400, "entries"),
    upload("package: duplicate entry", PACKAGES, duplicate_entries, "twice.aasx", 400, "twice"),
    upload("package: relationship out of the package", PACKAGES, escaping_relationship, "out.aasx", 400, "broken"),
    upload(
        "package: relative relationship above the root",
        PACKAGES,
        climbing_relationship,
        "climb.aasx",
        400,
        "above the package root",
    ),
    upload(
        "package: 5-digit year (strict)",
        f"{PACKAGES}?strict=true",
        five_digit_year_environment,
        "year.json",
        400,
        "0001..9999",
    ),
    upload("zip slip: ../", PACKAGES, lambda: with_entry("../../etc/cron.d/pwned"), "slip.aasx", 400, "'..'"),
    upload("zip slip: absolute", PACKAGES, lambda: with_entry("/etc/cron.d/pwned"), "slip.aasx", 400, "absolute"),
    upload("zip slip: backslashes", PACKAGES, lambda: with_entry("aasx\\..\\..\\pwned"), "slip.aasx", 400, "backslash"),
    upload(
        "zip slip: drive letter", PACKAGES, lambda: with_entry("C:/Windows/pwned"), "slip.aasx", 400, "drive letter"
    ),
    upload("zip slip: ./ segment", PACKAGES, lambda: with_entry("aasx/./pwned"), "slip.aasx", 400, "'.'"),
    upload(
        "package: /../ File value (strict)",
        f"{PACKAGES}?strict=true",
        lambda: sample_package("/../../etc/passwd"),
        "escape.aasx",
        400,
        "climbs above",
    ),
    upload("package: Content-Length above the limit", PACKAGES, oversized, "big.aasx", 413, "size"),
    Attack("package: streamed above the limit", "POST", PACKAGES, streamed_upload, 413, "size", {}),
    Attack(
        "attachment: Content-Length above the limit",
        "PUT",
        f"{ELEMENTS}/Manual/attachment",
        lambda: package_form(oversized(), "manual.pdf"),
        413,
        "size",
        {},
    ),
    Attack(
        "attachment: streamed above the limit", "PUT", f"{ELEMENTS}/Manual/attachment", streamed_upload, 413, "size", {}
    ),
    Attack(
        "thumbnail: streamed above the limit",
        "PUT",
        f"{SHELL}/asset-information/thumbnail",
        streamed_upload,
        413,
        "size",
        {},
    ),
]


@pytest.mark.parametrize("attack", JSON_ATTACKS + PACKAGE_ATTACKS, ids=lambda attack: attack.name)
async def test_an_attack_is_rejected_quickly_in_bounded_memory_while_others_are_served(
    server: AttackedServer, attack: Attack
) -> None:
    outcome = await run_attack(server, attack.prepared(server.url))
    assert_rejected(server, outcome, attack.status, attack.reason)


# --- attacks that are taken, harmlessly ---------------------------------------------------------------------


async def test_a_file_value_naming_a_server_file_never_reads_it(server: AttackedServer) -> None:
    async with ClientSession() as session:
        for id_short, value in (("Passwords", "/etc/passwd"), ("Remote", "file:///etc/passwd")):
            async with session.post(server.url + ELEMENTS, data=file_body(value, id_short)) as response:
                assert response.status == 201, await response.text()
            outcome = await run_attack(server, lambda s, i=id_short: s.get(f"{server.url}{ELEMENTS}/{i}/attachment"))  # type: ignore[misc]
            assert_rejected(server, outcome, 404, "no file content")
            assert b"root:" not in outcome.body


async def test_a_lenient_import_drops_a_file_value_that_climbs_out_of_the_package(server: AttackedServer) -> None:
    form = package_form(sample_package("/../../etc/passwd"), "escape.aasx")
    url = f"{server.url}{PACKAGES}/{encode_identifier('escape')}"
    outcome = await run_attack(server, lambda session: session.put(url, data=form))
    assert outcome.status == 201, outcome.body
    assert_served_others(server, outcome)
    async with ClientSession() as session:
        url = f"{server.url}{API}/submodels/{encode_identifier('urn:example:sm:uploaded')}/submodel-elements/Manual"
        async with session.get(url) as response:
            element = await response.json()
    assert "value" not in element


async def test_an_uploaded_file_name_cannot_climb_out_of_the_package(server: AttackedServer) -> None:
    form = package_form(b"%PDF-1.7", "../../../etc/passwd")
    outcome = await run_attack(
        server, lambda session: session.put(f"{server.url}{ELEMENTS}/Manual/attachment", data=form)
    )
    assert outcome.status == 204, outcome.body
    async with ClientSession() as session, session.get(f"{server.url}{ELEMENTS}/Manual") as response:
        value = (await response.json())["value"]
    assert value.startswith("/aasx/files/")
    assert ".." not in value.split("/")
    assert value.endswith("passwd")


async def test_a_request_line_above_64_kib_is_refused_by_the_http_parser(server: AttackedServer) -> None:
    """aiohttp's parser answers before the application: 400 with a plain-text reason, not a ``Result``."""
    url = f"{server.url}{API}/submodels/{'QUFB' * 250_000}"
    outcome = await run_attack(server, lambda session: session.get(url))
    assert outcome.status == 400
    assert b"65536" in outcome.body
    assert outcome.seconds < ATTACK_SECONDS
    assert outcome.memory_growth < MEMORY_BOUND
    assert_served_others(server, outcome)


async def test_a_large_valid_submodel_does_not_stall_other_clients(server: AttackedServer) -> None:
    elements = [
        {"modelType": "Property", "idShort": f"P{index}", "valueType": "xs:int", "value": "1"}
        for index in range(40_000)
    ]
    body = submodel_body("urn:example:sm:large", submodelElements=elements)
    assert len(body) < BODY_LIMIT
    outcome = await run_attack(
        server, lambda session: session.post(f"{server.url}{API}/submodels", data=io.BytesIO(body))
    )
    assert outcome.status == 201
    assert_served_others(server, outcome)


async def test_a_multipart_body_of_many_tiny_parts_does_not_stall_other_clients(server: AttackedServer) -> None:
    part = b'--parts\r\nContent-Disposition: form-data; name="aasIds"\r\n\r\nx\r\n'
    body = part * 20_000 + b"--parts--\r\n"
    headers = {"Content-Type": "multipart/form-data; boundary=parts"}
    outcome = await run_attack(
        server, lambda session: session.post(f"{server.url}{PACKAGES}", data=io.BytesIO(body), headers=headers)
    )
    assert_rejected(server, outcome, 400, "part")


# --- the import command ------------------------------------------------------------------------------------


def run_import(directory: Path, names: list[str]) -> tuple[int, str, float, int]:
    """``aas-server import`` on files in ``directory``: exit status, standard error, seconds and peak memory."""
    started = time.monotonic()
    with (directory / "out.txt").open("w") as stdout, (directory / "err.txt").open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "aas_server", "import", *names],
            cwd=directory,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        _, wait_status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(wait_status)
    return process.returncode, (directory / "err.txt").read_text(), time.monotonic() - started, usage.ru_maxrss * 1024


def test_the_import_command_refuses_each_hostile_file_with_exit_status_2(tmp_path: Path) -> None:
    files = {
        "xxe.xml": xxe_external_entity(),
        "laughs.xml": billion_laughs(),
        "deep.xml": deep_xml(),
        "deep.json": deep_json_arrays(),
        "bomb.aasx": zip_bomb(),
        "bombs.aasx": many_small_bombs(),
        "huge.aasx": huge_declared_size(),
        "liar.aasx": understated_part(),
        "slip.aasx": with_entry("../../etc/cron.d/pwned"),
        "many.aasx": many_entries(),
        "escape.json": submodel_body("urn:x").replace(b'"urn:x"', b'"\\ud800"'),
        "climb.aasx": climbing_relationship(),
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "fine.aasx").write_bytes(sample_package())
    benign_status, _, _, benign_peak = run_import(tmp_path, ["fine.aasx"])
    assert benign_status == 0
    status, stderr, seconds, peak = run_import(tmp_path, list(files))
    assert status == EXIT_INVALID, stderr
    lines = stderr.splitlines()
    for name in files:
        assert any(line.startswith(f"{name}: ") for line in lines), f"{name} not named in: {stderr}"
    assert "Traceback" not in stderr
    assert seconds < 5 + ATTACK_SECONDS * len(files)
    assert peak - benign_peak < MEMORY_BOUND, f"the import took {(peak - benign_peak) / 2**20:.0f} MiB more"
