"""The hub's REST application, alone in a process, for the attack corpus.

``python -m tests.attacks.server`` serves ``create_app`` with the hub's defaults (body limit, parser
limits) over an in-memory store holding one shell and one submodel, on a loopback port the operating
system chooses. It prints ``PORT <n>`` once it accepts connections and stops when its standard input
is closed, so it never outlives the test that started it. Running it as a process of its own lets
the test measure the server's peak memory (``/proc/<pid>/status``) apart from the client's.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

from aiohttp import web
from basyx.aas import model

from aas_server.api.app import create_app
from aas_server.store.twin_store import TwinStore

SHELL_ID = "urn:example:aas:attacked"
SUBMODEL_ID = "urn:example:sm:attacked"


async def seeded_store() -> TwinStore:
    """A store with the shell and submodel the attacks aim at and the bystander reads."""
    store = TwinStore()
    submodel = model.Submodel(
        SUBMODEL_ID,
        id_short="Operation",
        submodel_element=[
            model.Property("Speed", model.datatypes.Int, 1500),
            model.Property("Commissioned", model.datatypes.Date, model.datatypes.Date(2020, 1, 1)),
            model.File("Manual", content_type="application/pdf"),
        ],
    )
    shell = model.AssetAdministrationShell(
        model.AssetInformation(model.AssetKind.INSTANCE, global_asset_id="urn:example:asset:attacked"),
        SHELL_ID,
        id_short="Attacked",
        submodel={model.ModelReference.from_referable(submodel)},
    )
    await store.create(submodel)
    await store.create(shell)
    return store


async def serve() -> None:
    runner = web.AppRunner(create_app(await seeded_store()), access_log=None)
    await runner.setup()
    listener = socket.create_server(("127.0.0.1", 0))
    await web.SockSite(runner, listener).start()
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(serve())
