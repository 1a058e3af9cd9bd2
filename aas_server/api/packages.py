"""Package files and their import, for the AASX File Server API and ``/serialization`` (``file_server.py``).

``/packages``: ``GET`` (filter ``aasId``, paging), ``POST`` (multipart ``file``, ``fileName``,
``aasIds``), ``GET/PUT/DELETE /packages/{packageId}`` (the id base64url-encoded in the path). An
upload is read with ``aas_server.exchange.read_package`` (lenient: repairs and drops are reported,
see ``docs/exchange.md``; ``?strict=true`` rejects at the first issue), its shells, submodels and
concept descriptions are created in the store (``409`` if any id exists; PUT replaces existing
ones), its supplementary files go into the ``AttachmentStore`` under their package paths, and the
package file itself is kept in the ``PackageStore`` as uploaded. Deleting a package deletes the
file only; the objects it brought stay in the repositories.

``GET /serialization?aasIds=..&submodelIds=..&includeConceptDescriptions=``: the selected objects
as a JSON environment, XML environment or AASX (by ``Accept``), written by
``aas_server.exchange.write_package`` off the event loop from a JSON snapshot taken on the loop.
Without ``aasIds`` and ``submodelIds`` everything is serialised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from basyx.aas import model

from aas_server.errors import ConflictError, NotFoundError
from aas_server.exchange import read_package
from aas_server.store.files import Attachment, AttachmentStore
from aas_server.store.twin_store import TwinStore


def _exists(store: TwinStore, identifiable: model.Identifiable) -> bool:
    try:
        if isinstance(identifiable, model.AssetAdministrationShell):
            store.shell(identifiable.id)
        elif isinstance(identifiable, model.Submodel):
            store.submodel(identifiable.id)
        else:
            store.concept_description(identifiable.id)
    except NotFoundError:
        return False
    return True


async def import_package(
    store: TwinStore,
    attachments: AttachmentStore,
    content: bytes,
    file_name: str,
    *,
    replace: bool,
    strict: bool,
    on_change: Callable[[model.Identifiable], None],
) -> tuple[str, ...]:
    """Read a package and put its objects into the store and its files into ``attachments``; the shells' ids.

    Without ``replace`` an object whose id exists is ``409`` before anything is created.
    """
    result = await asyncio.to_thread(read_package, content, file_name, strict=strict)
    if not replace:
        taken = [identifiable.id for identifiable in result.identifiables if _exists(store, identifiable)]
        if taken:
            raise ConflictError(f"the package holds objects whose ids exist already: {', '.join(taken[:10])}")
    for path, (data, content_type) in result.supplementary_files.items():
        await attachments.put(path, Attachment(data, content_type))
    for identifiable in result.identifiables:
        if replace and _exists(store, identifiable):
            await store.replace(identifiable)
        else:
            await store.create(identifiable)
        on_change(identifiable)
    return tuple(
        identifiable.id
        for identifiable in result.identifiables
        if isinstance(identifiable, model.AssetAdministrationShell)
    )
