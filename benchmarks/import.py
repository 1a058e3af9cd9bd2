"""Import fidelity on the published IDTA templates: the share that goes through the hub with zero loss.

For every template package (``*.aasx``, ``*.json``, ``*.xml``) in the reference set
(``$AAS_REFERENCE_DIR/idta-templates``) and in the extra directories given (``--extra DIR`` or
``$AAS_IMPORT_TEMPLATES``, searched recursively; fetched templates are not part of the project):

1. **import**: ``read_package`` (lenient), timed;
2. **serve**: a hub (SQLite, REST on loopback, no OPC UA) takes the package through
   ``POST /packages``, is restarted on the same database, and
3. **export**: ``GET /serialization`` (JSON) gives the environment back;
4. **re-import**: the export is read again and compared with what the first import took.

A template has **zero loss** when nothing of it was refused or dropped (no ``dropped`` issue but a
copy of an identifiable with the same id and the same content earlier in the package), no
repair threw source text away (a second language string with a different text), the hub accepted
it, and the re-import has no issue at all and is the same environment as the first import (the
lists basyx keeps in sets compared in any order). Repairs that change form, not content (the v3.0
namespace, ``""`` for an absent optional string, placeholder references, invalid list item
idShorts, derived ``valueTypeListElement``, normalised file paths, a followed External
relationship, a mapped key type) and errors that change nothing in the model (a File naming a part
the package lacks) are counted apart and do not make a loss.

    .venv/bin/python benchmarks/import.py [--extra DIR ...] [--limit N] [--details]

Prints the shares, the loss classes with how many templates each touches, and import times.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aas_server.config import HistorySettings, HubSettings, OpcUaSettings, RestSettings, SecuritySettings
from aas_server.errors import PackageError
from aas_server.exchange import environment_json, read_package
from aas_server.exchange.report import ImportIssue
from aas_server.exchange.roundtrip import canonical
from aas_server.runtime.hub import Hub

SUFFIXES = (".aasx", ".json", ".xml")


@dataclass
class Outcome:
    name: str
    losses: list[str] = field(default_factory=list)
    form_repairs: int = 0
    errors: int = 0
    import_seconds: float = 0.0
    elements: int = 0

    @property
    def lossless(self) -> bool:
        return not self.losses


def templates(extra: list[Path]) -> list[Path]:
    reference = Path(os.environ.get("AAS_REFERENCE_DIR", "../shared/reference")) / "idta-templates"
    found = sorted(path for path in reference.glob("*") if path.suffix.lower() in SUFFIXES)
    for folder in extra:
        found.extend(sorted(path for path in folder.rglob("*") if path.suffix.lower() in SUFFIXES and path.is_file()))
    return found


def lossy_repair(issue: ImportIssue) -> bool:
    return issue.severity == "repaired" and issue.message.startswith("second language string") and "(" in issue.message


def loss_class(issue: ImportIssue) -> str:
    message = issue.message
    for marker in ("(Constraint AASd-", "(AASd-"):
        if marker in message:
            return f"{issue.severity}: {message.split(marker)[1].split(')')[0].join(['AASd-', ''])}"
    if message.startswith("second language string"):
        return "repaired: second language string with another text"
    if "occurs earlier; duplicate left out" in message:
        return "dropped: identifier twice in the package, with different content"
    if "(identifiers are unique across kinds)" in message:
        return (
            "dropped: identifier of another kind's object in the package (mostly a concept description = submodel id)"
        )
    if "violates AASd-002" in message:
        return "dropped: invalid idShort of an identifiable (attribute)"
    head = message.split(":")[0] if ":" in message[:40] else message[:60]
    return f"{issue.severity}: {head}"


def b64(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


def hub_settings(data_dir: Path) -> HubSettings:
    return HubSettings(
        data_dir=data_dir,
        rest=RestSettings(port=0),
        opcua=OpcUaSettings(enabled=False),
        history=HistorySettings(enabled=False),
        security=SecuritySettings(enabled=False),
    )


async def through_the_hub(path: Path, content: bytes, outcome: Outcome) -> bytes | None:
    """Upload, restart, export; the exported JSON (``None`` and a loss recorded if the hub refused)."""
    with tempfile.TemporaryDirectory() as folder:
        settings = hub_settings(Path(folder))
        async with Hub(settings) as hub, aiohttp.ClientSession() as http:
            form = aiohttp.FormData()
            form.add_field("fileName", path.name)
            form.add_field("file", content, filename=path.name, content_type="application/octet-stream")
            async with http.post(f"{hub.rest_url}/packages", data=form) as reply:
                if reply.status != 201:
                    outcome.losses.append(f"refused by the hub: {reply.status} {(await reply.text())[:120]}")
                    return None
        async with (
            Hub(settings) as hub,
            aiohttp.ClientSession() as http,
            http.get(f"{hub.rest_url}/serialization", headers={"Accept": "application/json"}) as reply,
        ):
            if reply.status != 200:
                outcome.losses.append(f"export failed after restart: {reply.status}")
                return None
            return await reply.read()


async def measure(path: Path) -> Outcome:
    outcome = Outcome(path.name)
    content = await asyncio.to_thread(path.read_bytes)
    started = time.perf_counter()
    try:
        first = read_package(content, path.name)
    except PackageError as error:
        outcome.losses.append(f"refused: {str(error)[len(path.name) + 2 :][:100]}")
        return outcome
    outcome.import_seconds = time.perf_counter() - started
    report = first.report
    outcome.elements = report.counts_in["submodel_elements"]
    for issue in report.issues:
        if (issue.severity == "dropped" and "with the same content" not in issue.message) or lossy_repair(issue):
            outcome.losses.append(loss_class(issue))
        elif issue.severity == "error":
            outcome.errors += 1
        else:
            outcome.form_repairs += 1
    if report.difference() != report.lost():
        outcome.losses.append("counts taken differ from counts in beyond what the report names")
    exported = await through_the_hub(path, content, outcome)
    if exported is None:
        return outcome
    again = read_package(exported, "exported.json")
    if again.report.issues:
        outcome.losses.append(f"re-import: {again.report.issues[0]}")
    taken = canonical(environment_json(first.identifiables))
    served = canonical(json.loads(exported))
    if canonical(environment_json(again.identifiables)) != taken or _by_id(served) != _by_id(taken):
        outcome.losses.append("exported environment differs from what the import took")
    return outcome


def _by_id(document: dict[str, Any]) -> dict[str, Any]:
    """Identifiables by id (the hub may list them in another order than the package)."""
    return {item["id"]: item for key in sorted(document) for item in document[key]}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extra", type=Path, action="append", default=[], help="more template folders (recursive)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N templates")
    parser.add_argument("--details", action="store_true", help="one line per template with its losses")
    arguments = parser.parse_args()
    extra = list(arguments.extra)
    if os.environ.get("AAS_IMPORT_TEMPLATES"):
        extra.append(Path(os.environ["AAS_IMPORT_TEMPLATES"]))
    logging.disable(logging.CRITICAL)  # basyx logs each refused object; the report has them
    found = templates(extra)
    paths = [path for path in found if path.stat().st_size > 0]  # an empty file is a snapshot's absent large file
    if arguments.limit:
        paths = paths[: arguments.limit]
    outcomes = []
    for path in paths:
        outcome = await measure(path)
        outcomes.append(outcome)
        if arguments.details:
            print(f"{'ok  ' if outcome.lossless else 'LOSS'} {path.name}: {sorted(set(outcome.losses))[:4]}")
    total = len(outcomes)
    lossless = sum(outcome.lossless for outcome in outcomes)
    classes: collections.Counter[str] = collections.Counter()
    for outcome in outcomes:
        classes.update(set(outcome.losses))
    print(
        f"templates: {total}"
        + (f" ({len(found) - len(paths)} empty files not counted)" if len(found) > len(paths) else "")
    )
    share = lossless / max(total, 1)
    print(f"zero loss (import -> serve -> restart -> export -> re-import): {lossless}/{total} = {share:.1%}")
    repaired = sum(outcome.lossless and outcome.form_repairs > 0 for outcome in outcomes)
    named = sum(outcome.lossless and outcome.errors > 0 for outcome in outcomes)
    print(f"  of them needing form-only repairs: {repaired}")
    print(f"  of them with errors only (a File names a part the package lacks): {named}")
    print("loss classes (templates touched):")
    for name, count in classes.most_common():
        print(f"  {count:4}  {name}")
    times = [outcome.import_seconds for outcome in outcomes if outcome.import_seconds]
    if times:
        print(
            f"import time: median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms;"
            f" {sum(o.elements for o in outcomes) / max(sum(times), 1e-9):.0f} source elements/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
