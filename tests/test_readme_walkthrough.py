"""The README's walkthrough, run as printed: its curl commands (shells, a live value with its quality,
a set-point write with the operator's key, the active alarm, its acknowledgement, fault injection
and clearing, a what-if job) against a demo hub, so that a README step cannot silently stop
working. The hub listens on a free port; only the README's `127.0.0.1:8081` is replaced by it."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aas_server.config import HubSettings, load_settings
from aas_server.runtime.hub import Hub
from tests.support import ROOT, eventually
from tests.test_end_to_end import FILLER_MOTOR, element_url, get_value

pytestmark = pytest.mark.skipif(
    shutil.which("curl") is None or shutil.which("bash") is None or shutil.which("base64") is None,
    reason="the README's commands need bash, curl and base64",
)

README_URL = "http://127.0.0.1:8081"


def readme_section_blocks(heading: str) -> list[str]:
    """The ```sh blocks of one README section (up to the next heading)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split(f"\n{heading}\n", 1)[1]
    section = re.split(r"\n#{2,3} ", section, maxsplit=1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


async def run_sh(script: str, rest_url: str) -> str:
    """Run README lines with bash against the hub; the event loop keeps serving meanwhile."""
    base = rest_url.removesuffix("/api/v3.0")
    process = await asyncio.create_subprocess_exec(
        "bash",
        # no pipefail: the README pipes listings into `head`, which closes the pipe early and makes
        # `python3 -m json.tool` exit 32 (EPIPE) although the user saw exactly what was printed
        "-eu",
        "-c",
        script.replace(README_URL, base),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, f"{script}\n--- stderr:\n{err.decode()}"
    return out.decode()


def json_documents(printed: str) -> list[Any]:
    """The JSON bodies curl printed one after the other (curl adds no newline between them)."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while (at := printed.find("{", at)) != -1:
        document, at = decoder.raw_decode(printed, at)
        documents.append(document)
    return documents


def demo_hub_settings(data_dir: Path) -> HubSettings:
    """The demo's settings as `aas-server demo --fault temperature-excursion` runs them, on free ports."""
    settings = load_settings(ROOT / "examples" / "bottling-line" / "hub.yaml")
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "rest": settings.rest.model_copy(update={"port": 0}),
            "opcua": settings.opcua.model_copy(update={"port": 0}),
            "simulator": settings.simulator.model_copy(update={"port": 0, "faults": ["temperature-excursion"]}),
        }
    )


async def test_the_readme_curl_walkthrough_works_as_printed_on_the_demo_hub(tmp_path: Path) -> None:
    async with Hub(demo_hub_settings(tmp_path)) as hub, aiohttp.ClientSession() as http:
        rest_url = hub.rest_url
        assert rest_url is not None

        # What the demo shows: shells, a live value with its quality, a set-point with the key
        (shows,) = readme_section_blocks("## What the demo shows")
        printed = await run_sh(shows, rest_url)
        assert '"id": "urn:aas-server:demo:aas:plant"' in printed
        assert re.search(r'HTTP/1.1 200 OK.*X-AAS-Quality: good.*\{"Temperature":', printed, flags=re.DOTALL)
        assert "HTTP/1.1 204 No Content" in printed
        assert (await get_value(http, element_url(rest_url, FILLER_MOTOR, "SpeedSetpoint")))[0] == 1200.0

        # Demo faults: "after a few seconds" the temperature alarm is active, HighHigh
        async def active() -> dict[str, str]:
            async with http.get(f"{rest_url}/alarms", params={"state": "active"}) as response:
                return {alarm["id"]: alarm["limitState"] for alarm in (await response.json())["result"]}

        await eventually(active, lambda states: states.get("filler-temperature") == "HighHigh", within=30)
        faults = readme_section_blocks("### Demo faults")[0]
        lines = faults.split("\n# jam the filler at run time, then clear every fault\n")
        alarms_and_ack = "\n".join(line for line in lines[0].splitlines() if not line.startswith("aas-server "))
        printed = await run_sh(alarms_and_ack, rest_url)
        assert '"name": "filler-temperature"' in printed
        assert '"limitState": "HighHigh"' in printed
        acknowledged: dict[str, Any] = json.loads(printed.splitlines()[-1])
        assert acknowledged["alarm"]["acknowledged"] is True
        assert acknowledged["alarm"]["comment"] == "checking the cooler"
        simulator = hub.simulator
        assert simulator is not None
        inject, clear = json_documents(await run_sh(lines[1], rest_url))
        assert inject["success"] is True, inject
        assert "jam" in inject["outputArguments"][0]["value"]["value"].split(","), inject
        assert clear["success"] is True, clear
        assert simulator.faults == ()

        # What-if on the running hub: the POST answers 202 with the job's Location, the job ends done
        (whatif,) = readme_section_blocks("### What-if simulation on the running hub")
        post = whatif.split("\n# 202 Accepted", 1)[0]
        printed = await run_sh(post, rest_url)
        assert printed.startswith("HTTP/1.1 202 Accepted")
        match = re.search(r"^Location: (\S+)", printed, flags=re.MULTILINE)
        assert match is not None, printed
        job = match.group(1).rsplit("/", 1)[1]
        poll = next(line for line in whatif.splitlines() if "/simulations/<job>" in line and line.startswith("curl"))

        async def state() -> str:
            answer: str = json.loads(await run_sh(poll.replace("<job>", job), rest_url))["state"]
            return answer

        assert await eventually(state, lambda s: s in {"done", "failed", "cancelled"}, within=90) == "done"
