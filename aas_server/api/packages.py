"""Package files and their import, for the AASX File Server API and ``/serialization`` (``file_server.py``).

``/packages``: ``GET`` (filter ``aasId``, paging), ``POST`` (multipart ``file``, ``fileName``,
``aasIds``), ``GET/PUT/DELETE /packages/{packageId}`` (the id base64url-encoded in the path). An
upload is read with ``aas_server.exchange.read_package`` (lenient: repairs and drops are reported,
see ``docs/exchange.md``; ``?strict=true`` rejects at the first issue), its shells, submodels and
concept descriptions are created in the store (``409`` if a shell or submodel id exists; a
concept description the hub holds is skipped if identical, else the stored one is kept and the
difference logged, ``exchange.clashes``; PUT replaces existing ones), its supplementary files go
into the ``AttachmentStore`` for the File elements and thumbnails that name them
(``store.files.owned_files``: two packages with the same path keep both), and the package file
itself is kept in the ``PackageStore`` as uploaded. Deleting a package deletes the file only; the
objects it brought stay in the repositories.

An upload is all or nothing (``TwinStore.commit_identifiables``): every object is checked first
(it reads back as itself, its id is free or replaceable, device-bound Properties survive, and the
caller may *create* or *update* that very object, see :func:`object_rights`), then objects, files
and the package file are stored in one database transaction. On any error nothing has changed.

``GET /serialization?aasIds=..&submodelIds=..&includeConceptDescriptions=``: the selected objects
as a JSON environment, XML environment or AASX (by ``Accept``), written by
``aas_server.exchange.write_package`` off the event loop from a JSON snapshot taken on the loop.
Without ``aasIds`` and ``submodelIds`` everything is serialised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web
from basyx.aas import model

from aas_server.api import auth
from aas_server.api.package_access import element_targets, first_refused
from aas_server.config import AccessOperation
from aas_server.errors import AccessDeniedError, NotFoundError
from aas_server.exchange import read_package
from aas_server.exchange.clashes import settle_concept_descriptions
from aas_server.security.rules import Decision
from aas_server.security.scopes import ScopeKind
from aas_server.store.files import Attachment, AttachmentStore, PackageStore, StoredPackage, owned_files
from aas_server.store.twin_store import ObjectCheck, TwinStore

_LOG = logging.getLogger(__name__)


async def import_package(
    store: TwinStore,
    attachments: AttachmentStore,
    packages: PackageStore,
    content: bytes,
    package: StoredPackage,
    *,
    replace: bool,
    strict: bool,
    rights: Callable[[list[model.Identifiable]], ObjectCheck | None] | None = None,
    on_change: Callable[[model.Identifiable], None],
) -> StoredPackage:
    """Read a package and store its objects, its files and ``package`` (the file as uploaded) as one change.

    ``package.aas_ids`` is kept only when the package holds no shell; otherwise the package's shells
    are its ``aas_ids``. Without ``replace`` an object whose id exists is ``409``; ``rights`` gives the
    check that may refuse an object of the package (see :func:`object_rights`). Nothing is stored
    unless all of it is. Returns the package as stored.
    """
    result = await asyncio.to_thread(read_package, content, package.file_name, strict=strict)
    if not replace:  # a concept description the hub holds is skipped, or kept as stored if it differs
        stored_descriptions = {item.id: item for item in store.concept_descriptions()}
        for issue in settle_concept_descriptions(result, stored_descriptions):
            _LOG.warning("%s: %s", package.file_name, issue)
    identifiables = result.identifiables
    check = rights(identifiables) if rights is not None else None
    shell_ids = tuple(item.id for item in identifiables if isinstance(item, model.AssetAdministrationShell))
    stored = StoredPackage(package.package_id, package.file_name, package.content, shell_ids or package.aas_ids)
    journaled = store.journal is not None and all(
        getattr(files, "journal", None) is store.journal for files in (attachments, packages)
    )
    if journaled:
        files = owned_files(identifiables, result.supplementary_files)
        await store.commit_identifiables(identifiables, replace=replace, check=check, files=files, package=stored)
    else:
        await store.commit_identifiables(identifiables, replace=replace, check=check)
        for path, (data, content_type) in owned_files(identifiables, result.supplementary_files).items():
            await attachments.put(path, Attachment(data, content_type))
        await packages.put(stored)
    for identifiable in identifiables:
        on_change(identifiable)
    return stored


def object_rights(request: web.Request, batch: list[model.Identifiable]) -> ObjectCheck | None:
    """The check that the caller may *create* (new id) or *update* (existing id) each object of ``batch``.

    A shell or concept description is decided on its id, and a shell's submodel references must not
    widen the caller's rights (``auth.check_references``; submodels the upload creates are the
    caller's); a submodel on its id, the shells that reference it (in the store and in the upload)
    and every element of the new submodel with its idShort path and semanticIds; replacing a
    submodel also needs *update* on all of the existing one. ``None`` when access control is off.
    """
    access = request.get(auth.ACCESS_KEY)
    if access is None:
        return None
    policy, roles, model_access = access.model.policy, access.roles, access.model
    store = model_access.store

    def check(identifiable: model.Identifiable, existing: model.Identifiable | None) -> None:
        operation = AccessOperation.CREATE if existing is None else AccessOperation.UPDATE
        if isinstance(identifiable, model.AssetAdministrationShell):
            decision = policy.decide(roles, operation, model_access.shell_target(identifiable.id))
        elif isinstance(identifiable, model.ConceptDescription):
            decision = policy.decide(roles, operation, model_access.concept_description_target(identifiable.id))
        else:
            assert isinstance(identifiable, model.Submodel)
            decision = _submodel_decision(access, identifiable, existing, operation, batch)
        if not decision.allowed:
            raise AccessDeniedError(
                f"{access.principal.name!r} may not {operation.value} {type(identifiable).__name__} "
                f"{identifiable.id!r} (in the uploaded package): {decision.reason}"
            )
        if isinstance(identifiable, model.AssetAdministrationShell):
            created = {
                item.id for item in batch if isinstance(item, model.Submodel) and not _submodel_exists(store, item.id)
            }
            auth.check_references(request, identifiable.id, identifiable, created=created)

    return check


def _submodel_exists(store: TwinStore, submodel_id: str) -> bool:
    try:
        store.submodel(submodel_id)
    except NotFoundError:
        return False
    return True


def _submodel_decision(
    access: auth.RequestAccess,
    submodel: model.Submodel,
    existing: model.Identifiable | None,
    operation: AccessOperation,
    batch: list[model.Identifiable],
) -> Decision:
    policy, roles, model_access = access.model.policy, access.roles, access.model
    if existing is not None:
        scope = model_access.scope(roles, AccessOperation.UPDATE, submodel.id)
        if scope.kind is not ScopeKind.ALL:
            return Decision(False, f"not allowed to update all of the existing submodel ({scope.reason})")
    shells = set(model_access.shells_of(submodel.id))
    for item in batch:
        if isinstance(item, model.AssetAdministrationShell) and any(
            reference.key and reference.key[0].value == submodel.id for reference in item.submodel
        ):
            shells.add(item.id)
    rules = policy.rules_for(roles, operation)
    if rules.unrestricted:
        return Decision(True, "allowed for every target")
    refused = first_refused(rules, frozenset(shells), submodel.id, element_targets(submodel))
    if refused is not None:
        id_short_path, decision = refused
        where = f"element {id_short_path!r}" if id_short_path else "the submodel"
        return Decision(False, f"{where}: {decision.reason}")
    return Decision(True, "allowed for the submodel and every element in it")
