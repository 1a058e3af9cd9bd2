"""Files stored before attachments had owners are still served after an upgrade, to the elements naming them."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from basyx.aas import model

from aas_server.api.serialization import encode_identifier
from aas_server.config import HubSettings
from aas_server.persistence.sqlite import SqliteRepository
from aas_server.runtime.hub import Hub

SUBMODEL = "urn:test:sm:documents"
LEGACY = "/aasx/files/legacy.pdf"


async def test_files_kept_under_a_bare_path_by_an_older_hub_are_claimed_by_their_elements(tmp_path: Path) -> None:
    settings = HubSettings.model_validate(
        {
            "data_dir": str(tmp_path),
            "rest": {"port": 0},
            "opcua": {"enabled": False},
            "security": {"enabled": False},
        }
    )
    submodel = model.Submodel(
        SUBMODEL,
        id_short="Documents",
        submodel_element=[
            model.File("Manual", "application/pdf", value=LEGACY),
            model.File("Elsewhere", "application/pdf", value="/aasx/files/other.pdf"),
        ],
    )
    async with SqliteRepository(settings.sqlite_path) as repository:
        await repository.save_identifiables([submodel])
        await repository.save_files({LEGACY: (b"%PDF from an older hub", "application/pdf")})
    url = f"/submodels/{encode_identifier(SUBMODEL)}/submodel-elements"
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        assert hub.rest_url is not None
        async with http.get(f"{hub.rest_url}{url}/Manual/attachment") as response:
            assert response.status == 200
            assert await response.read() == b"%PDF from an older hub"
        async with http.get(f"{hub.rest_url}{url}/Elsewhere/attachment") as response:
            assert response.status == 404
