"""Access control of the REST API: authentication, the rule check of every route, list filtering, audit.

``access_middleware(control)`` (pass it to ``create_app(store, middlewares=[...])``) runs inside the
error middleware, before any handler:

1. credentials: ``Authorization: Bearer <JWT>`` or ``X-API-Key: <key>``; none is anonymous
   (``security.anonymous_role``). Invalid credentials, or none without an anonymous role, are
   ``401`` with ``WWW-Authenticate: Bearer`` whatever the route.
2. the route's operation and target (``ROUTE_ACCESS`` maps every route to exactly one operation),
   resolved read-only from the path, the query and the store; then the rules. A denied request is
   ``403`` (``401`` for an anonymous caller) and the handler does not run, so nothing changes.
3. the handler; reads see only what the caller may read (the helpers below), writes and denials
   are recorded in the audit log with their outcome.

Targets and checks by route kind:

- one shell, concept description: the rule must allow the object;
- a submodel or an element: reads need some part of the subtree to be readable (a partly readable
  one is served pruned, see ``aas_server.security.scopes``); updates, deletes and value writes
  need all of the subtree; creating an element is checked on its container (the new element's
  idShort and semanticId are in the body); ``PUT`` is *update* when the object exists, else *create*;
- listings (``GET /shells``, ``/submodels`` and their ``$``-forms, ``/concept-descriptions``,
  ``/packages``, a submodel's ``submodel-elements``) need some rule allowing reads and show only
  what the caller may read; paging cursors count only what is shown;
- an *export* is a read too: whatever it hands out (``/serialization``, ``/rdf``, ``/sparql``, package
  downloads) must also be readable, so a deny rule on reads holds for exports (:func:`_as_read_too`);
- ``/serialization`` (*export*): the ``aasIds`` and ``submodelIds`` asked for must be wholly
  exportable; without them it holds what the caller may export (concept descriptions likewise);
- ``/rdf`` and ``/sparql`` (*export*): the whole repository; only a rule without target lists
  allows them (the graph cannot be cut per caller);
- AASX packages: a download (*export*), a listing entry (*read*) or a delete needs every object the
  file holds: its shells, concept descriptions and each element of its submodels, judged with the
  store's references (``package_access``); uploads
  (*upload*), like ``POST`` of a shell, submodel or concept description (*create*), are checked
  against the whole repository, as their content is known only to the handler;
- ``PUT /packages/{id}`` over an existing package also needs the rights to delete that package
  (:func:`check_package_replacement`), as it removes the file there;
- ``/description`` is public (invalid credentials are still ``401``).

No widening of one's own rights, checked by the handlers once the body is read (``403``):

- a change of the submodels a shell references (``POST``/``DELETE .../submodel-refs``, ``POST``,
  ``PUT`` and ``DELETE`` of a shell, package uploads) must not give the caller rights on a referenced
  submodel it lacks on the submodel itself (:func:`check_references`), so rules scoped by shell may
  follow references: the caller could not have made one that widens them;
- a ``PATCH`` of a submodel or element (and of its ``$metadata``) keeps what it holds, so it must not
  change it (say, its semanticId) such that the caller could do more with what it holds
  (:func:`check_kept_content`); a ``PUT`` brings its own content and may relabel it;
- File values and thumbnails may not name bytes stored for another element or shell
  (``attachments.check_file_values``).

With ``security.enabled: false`` every request passes and writes are still audited.

Left out: checking the rest of a change's body against the rules (a new element's semanticId or a
``PUT``'s content give rights only on what the caller itself supplied), an RDF graph cut to the
caller, and caching of pruned bodies (a partly readable submodel is copied per request).
"""

from __future__ import annotations

import enum
import functools
import logging
import weakref
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass

import orjson
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from basyx.aas import model

from aas_server.api.context import ALARMS_KEY, MAX_BODY_KEY, PACKAGES_KEY, SIMULATIONS_KEY, store_of
from aas_server.api.errors import mapping_for, result_response
from aas_server.api.package_access import decide_package, package_contents
from aas_server.api.resources import canonical_path
from aas_server.api.serialization import decode_identifier
from aas_server.config import AccessOperation
from aas_server.errors import AccessDeniedError, HubError, NotFoundError
from aas_server.model import paths
from aas_server.security.access import AccessControl
from aas_server.security.audit import AuditRecord
from aas_server.security.credentials import CredentialError, Principal
from aas_server.security.rules import REPOSITORY, Decision, Target
from aas_server.security.scopes import ModelAccess, Scope, ScopeKind
from aas_server.store.files import StoredPackage
from aas_server.store.twin_store import TwinStore

_LOG = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
"""The header carrying an API key."""


class TargetKind(enum.Enum):
    """What part of the request names the target the rules look at."""

    PUBLIC = "public"
    LISTING = "listing"
    REPOSITORY = "repository"
    SERIALIZATION = "serialization"
    SHELL = "shell"
    SUBMODEL = "submodel"
    ELEMENT = "element"
    CONTAINER = "container"
    """Where a new element goes: the element at ``idShortPath``, or the submodel."""
    CONCEPT_DESCRIPTION = "concept-description"
    PACKAGE = "package"
    ALARM = "alarm"
    """An alarm (``alarmId``), judged on its rule's element; an unknown alarm on the whole repository."""
    SIMULATION = "simulation"
    """A simulation job (``jobId``) or the body's ``shell``, judged on that process shell (``_check_simulation``)."""


@dataclass(frozen=True, slots=True)
class RouteAccess:
    """The operation of a route (``None``: *update* if the target exists, else *create*) and its target kind."""

    operation: AccessOperation | None
    kind: TargetKind


_READ, _CREATE, _UPDATE, _DELETE = (
    AccessOperation.READ,
    AccessOperation.CREATE,
    AccessOperation.UPDATE,
    AccessOperation.DELETE,
)
_WRITE_VALUE, _INVOKE, _UPLOAD, _EXPORT = (
    AccessOperation.WRITE_VALUE,
    AccessOperation.INVOKE,
    AccessOperation.UPLOAD,
    AccessOperation.EXPORT,
)


def _route(operation: AccessOperation | None, kind: TargetKind) -> RouteAccess:
    return RouteAccess(operation, kind)


ROUTE_ACCESS: Mapping[str, RouteAccess] = {
    # AAS Repository and AAS interfaces
    "shells.get_all_shells": _route(_READ, TargetKind.LISTING),
    "shells.get_all_shells_reference": _route(_READ, TargetKind.LISTING),
    "shells.post_shell": _route(_CREATE, TargetKind.REPOSITORY),
    "shells.get_shell": _route(_READ, TargetKind.SHELL),
    "shells.put_shell": _route(None, TargetKind.SHELL),
    "shells.delete_shell": _route(_DELETE, TargetKind.SHELL),
    "shells.get_shell_reference": _route(_READ, TargetKind.SHELL),
    "shells.get_asset_information": _route(_READ, TargetKind.SHELL),
    "shells.put_asset_information": _route(_UPDATE, TargetKind.SHELL),
    "shells.get_thumbnail": _route(_READ, TargetKind.SHELL),
    "shells.put_thumbnail": _route(_UPLOAD, TargetKind.SHELL),
    "shells.delete_thumbnail": _route(_UPLOAD, TargetKind.SHELL),
    "shells.get_submodel_references": _route(_READ, TargetKind.SHELL),
    "shells.post_submodel_reference": _route(_UPDATE, TargetKind.SHELL),
    "shells.delete_submodel_reference": _route(_UPDATE, TargetKind.SHELL),
    # Submodel Repository
    "submodels.get_all_submodels": _route(_READ, TargetKind.LISTING),
    "submodels.get_all_submodels_metadata": _route(_READ, TargetKind.LISTING),
    "submodels.get_all_submodels_value": _route(_READ, TargetKind.LISTING),
    "submodels.get_all_submodels_reference": _route(_READ, TargetKind.LISTING),
    "submodels.get_all_submodels_path": _route(_READ, TargetKind.LISTING),
    "submodels.post_submodel": _route(_CREATE, TargetKind.REPOSITORY),
    # Submodel interface (under /submodels/{id} and /shells/{aas}/submodels/{id})
    "submodels.get_submodel": _route(_READ, TargetKind.SUBMODEL),
    "submodels.put_submodel": _route(None, TargetKind.SUBMODEL),
    "submodels.patch_submodel": _route(_UPDATE, TargetKind.SUBMODEL),
    "submodels.delete_submodel": _route(_DELETE, TargetKind.SUBMODEL),
    "submodels.get_submodel_metadata": _route(_READ, TargetKind.SUBMODEL),
    "submodels.patch_submodel_metadata": _route(_UPDATE, TargetKind.SUBMODEL),
    "submodels.get_submodel_value": _route(_READ, TargetKind.SUBMODEL),
    "submodels.patch_submodel_value": _route(_WRITE_VALUE, TargetKind.SUBMODEL),
    "submodels.get_submodel_reference": _route(_READ, TargetKind.SUBMODEL),
    "submodels.get_submodel_path": _route(_READ, TargetKind.SUBMODEL),
    "submodels.get_all_submodel_elements": _route(_READ, TargetKind.SUBMODEL),
    "submodels.get_all_submodel_elements_metadata": _route(_READ, TargetKind.SUBMODEL),
    "submodels.get_all_submodel_elements_value": _route(_READ, TargetKind.SUBMODEL),
    "submodels.get_all_submodel_elements_reference": _route(_READ, TargetKind.SUBMODEL),
    "submodels.get_all_submodel_elements_path": _route(_READ, TargetKind.SUBMODEL),
    "submodels.post_submodel_element": _route(_CREATE, TargetKind.CONTAINER),
    # Submodel interface, elements
    "submodel_elements.get_submodel_element": _route(_READ, TargetKind.ELEMENT),
    "submodel_elements.put_submodel_element": _route(None, TargetKind.ELEMENT),
    "submodel_elements.patch_submodel_element": _route(_UPDATE, TargetKind.ELEMENT),
    "submodel_elements.post_submodel_element_by_path": _route(_CREATE, TargetKind.CONTAINER),
    "submodel_elements.delete_submodel_element": _route(_DELETE, TargetKind.ELEMENT),
    "submodel_elements.get_submodel_element_metadata": _route(_READ, TargetKind.ELEMENT),
    "submodel_elements.patch_submodel_element_metadata": _route(_UPDATE, TargetKind.ELEMENT),
    "submodel_elements.get_submodel_element_value": _route(_READ, TargetKind.ELEMENT),
    "submodel_elements.patch_submodel_element_value": _route(_WRITE_VALUE, TargetKind.ELEMENT),
    "submodel_elements.get_submodel_element_reference": _route(_READ, TargetKind.ELEMENT),
    "submodel_elements.get_submodel_element_path": _route(_READ, TargetKind.ELEMENT),
    "submodel_elements.get_attachment": _route(_READ, TargetKind.ELEMENT),
    "submodel_elements.put_attachment": _route(_UPLOAD, TargetKind.ELEMENT),
    "submodel_elements.delete_attachment": _route(_UPLOAD, TargetKind.ELEMENT),
    "submodel_elements.invoke_operation": _route(_INVOKE, TargetKind.ELEMENT),
    "submodel_elements.invoke_operation_value_only": _route(_INVOKE, TargetKind.ELEMENT),
    "submodel_elements.invoke_operation_async": _route(_INVOKE, TargetKind.ELEMENT),
    "submodel_elements.invoke_operation_async_value_only": _route(_INVOKE, TargetKind.ELEMENT),
    "submodel_elements.get_operation_status": _route(_INVOKE, TargetKind.ELEMENT),
    "submodel_elements.get_operation_results": _route(_INVOKE, TargetKind.ELEMENT),
    "submodel_elements.get_operation_results_value_only": _route(_INVOKE, TargetKind.ELEMENT),
    "history.get_history": _route(_READ, TargetKind.ELEMENT),
    # Concept Description Repository
    "concept_descriptions.get_all_concept_descriptions": _route(_READ, TargetKind.LISTING),
    "concept_descriptions.post_concept_description": _route(_CREATE, TargetKind.REPOSITORY),
    "concept_descriptions.get_concept_description": _route(_READ, TargetKind.CONCEPT_DESCRIPTION),
    "concept_descriptions.put_concept_description": _route(None, TargetKind.CONCEPT_DESCRIPTION),
    "concept_descriptions.delete_concept_description": _route(_DELETE, TargetKind.CONCEPT_DESCRIPTION),
    # AASX File Server and serialization
    "file_server.get_all_packages": _route(_READ, TargetKind.LISTING),
    "file_server.post_package": _route(_UPLOAD, TargetKind.REPOSITORY),
    "file_server.get_package": _route(_EXPORT, TargetKind.PACKAGE),
    "file_server.put_package": _route(_UPLOAD, TargetKind.REPOSITORY),
    "file_server.delete_package": _route(_DELETE, TargetKind.PACKAGE),
    "file_server.get_serialization": _route(_EXPORT, TargetKind.SERIALIZATION),
    # description, RDF, SPARQL
    "description.get_description": _route(_READ, TargetKind.PUBLIC),
    "rdf.get_rdf": _route(_EXPORT, TargetKind.REPOSITORY),
    "rdf.get_sparql": _route(_EXPORT, TargetKind.REPOSITORY),
    "rdf.post_sparql": _route(_EXPORT, TargetKind.REPOSITORY),
    # alarms (api/alarms.py): the list shows the alarms on readable elements
    "alarms.get_alarms": _route(_READ, TargetKind.LISTING),
    "alarms.acknowledge_alarm": _route(AccessOperation.ACKNOWLEDGE, TargetKind.ALARM),
    "alarms.confirm_alarm": _route(AccessOperation.ACKNOWLEDGE, TargetKind.ALARM),
    "alarms.comment_alarm": _route(AccessOperation.ACKNOWLEDGE, TargetKind.ALARM),
    "alarms.shelve_alarm": _route(AccessOperation.ACKNOWLEDGE, TargetKind.ALARM),
    "alarms.unshelve_alarm": _route(AccessOperation.ACKNOWLEDGE, TargetKind.ALARM),
    # simulations (api/simulations.py): every route is `simulate` on the process shell
    "simulations.post_simulation": _route(AccessOperation.SIMULATE, TargetKind.SIMULATION),
    "simulations.get_simulations": _route(AccessOperation.SIMULATE, TargetKind.SIMULATION),
    "simulations.get_simulation": _route(AccessOperation.SIMULATE, TargetKind.SIMULATION),
    "simulations.delete_simulation": _route(AccessOperation.SIMULATE, TargetKind.SIMULATION),
    "simulations.compare_simulations": _route(AccessOperation.SIMULATE, TargetKind.SIMULATION),
}
"""Every route's operation and target kind, by handler (module in ``aas_server.api`` and function name)."""


def route_name(handler: Callable[..., object]) -> str:
    """The ``ROUTE_ACCESS`` key of a handler: ``shells.get_all_shells``."""
    module = getattr(handler, "__module__", "") or ""
    return f"{module.removeprefix('aas_server.api.')}.{getattr(handler, '__qualname__', '')}"


@dataclass(frozen=True, slots=True)
class RequestAccess:
    """The checked request's caller and operation, for the list filters of the handlers."""

    principal: Principal
    operation: AccessOperation
    model: ModelAccess

    @property
    def roles(self) -> frozenset[str]:
        return self.principal.roles

    @property
    def reads(self) -> bool:
        return self.operation is AccessOperation.READ

    def unrestricted(self, operation: AccessOperation) -> bool:
        return self.model.policy.rules_for(self.roles, operation).unrestricted


ACCESS_KEY: web.RequestKey[RequestAccess] = web.RequestKey("access", RequestAccess)
"""The caller and what it may see, set on requests that passed the rule check."""


@dataclass(frozen=True, slots=True)
class _Checked:
    operation: AccessOperation
    target: str
    decision: Decision


def access_middleware(control: AccessControl) -> Middleware:
    """The REST access-control middleware of ``control`` (see the module docstring)."""
    models: weakref.WeakKeyDictionary[TwinStore, ModelAccess] = weakref.WeakKeyDictionary()
    routes: dict[Callable[..., object], RouteAccess | None] = {}

    def route_of(handler: Callable[..., object]) -> RouteAccess | None:
        if handler not in routes:
            routes[handler] = ROUTE_ACCESS.get(route_name(handler))
        return routes[handler]

    def model_access(store: TwinStore) -> ModelAccess:
        found = models.get(store)
        if found is None:
            found = models[store] = ModelAccess(store, control.policy)
        return found

    def audit(
        request: web.Request,
        principal: Principal,
        operation: AccessOperation | None,
        target: str,
        status: int | str,
        reason: str = "",
    ) -> None:
        control.audit.record(
            AuditRecord(
                principal=principal.name,
                principal_kind=principal.kind,
                roles=tuple(sorted(principal.roles)),
                method=request.method,
                path=request.path,
                operation=operation.value if operation else None,
                target=target,
                status=status,
                reason=reason,
            )
        )

    async def run_audited(
        request: web.Request, handler: Handler, principal: Principal, operation: AccessOperation, target: str
    ) -> web.StreamResponse:
        status: int | str = "cancelled"
        try:
            response = await handler(request)
            status = response.status
            return response
        except HubError as error:
            mapping = mapping_for(error)
            status = mapping.status if mapping is not None else 500
            raise
        except web.HTTPException as error:
            status = error.status
            raise
        except web.RequestPayloadError:
            status = 400
            raise
        except Exception:
            status = 500
            raise
        finally:
            audit(request, principal, operation, target, status)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        match_info = request.match_info
        if match_info.http_exception is not None:
            return await handler(request)
        route = route_of(match_info.handler)
        if not control.enabled:
            if route is None or route.operation in (_READ, _EXPORT) or route.kind is TargetKind.PUBLIC:
                return await handler(request)
            open_caller = Principal("anonymous", "open", frozenset())
            return await run_audited(request, handler, open_caller, route.operation or _UPDATE, "-")
        try:
            principal = control.authenticate(
                request.headers.get(hdrs.AUTHORIZATION), request.headers.get(API_KEY_HEADER)
            )
        except CredentialError as error:
            caller = Principal("unknown", "invalid-credentials", frozenset())
            operation = route.operation if route is not None else None
            audit(request, caller, operation, "-", 401, str(error))
            return _unauthorized(str(error))
        if route is None:
            _LOG.error("REST route %s has no access rule mapping; refused", route_name(match_info.handler))
            audit(request, principal, None, "-", 403, "route without access mapping")
            return result_response(403, "Forbidden", "access to this route is not configured")
        if route.kind is TargetKind.PUBLIC:
            return await handler(request)
        if not principal.roles:
            audit(request, principal, route.operation, "-", 401, "no credentials")
            return _unauthorized("credentials are required: send a bearer token or an API key")
        model_of_store = model_access(store_of(request))
        checked = await _check(request, route, principal, model_of_store)
        if not checked.decision.allowed:
            status = 401 if principal.anonymous else 403
            audit(request, principal, checked.operation, checked.target, status, checked.decision.reason)
            if status == 401:
                return _unauthorized(f"anonymous callers may not {checked.operation.value} this; send credentials")
            return result_response(
                403, "Forbidden", f"{principal.name!r} may not {checked.operation.value} {checked.target}"
            )
        request[ACCESS_KEY] = RequestAccess(principal, checked.operation, model_of_store)
        if checked.operation in (_READ, _EXPORT) or (route.kind is TargetKind.SIMULATION and request.method == "GET"):
            return await handler(request)  # reads (polling a simulation job too) are not audited; denials are
        return await run_audited(request, handler, principal, checked.operation, checked.target)

    return middleware


def _unauthorized(text: str) -> web.Response:
    return result_response(401, "Unauthorized", text, headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="aas-server"'})


def _exists(lookup: Callable[[], object]) -> bool:
    try:
        lookup()
    except NotFoundError:
        return False
    return True


async def _check(request: web.Request, route: RouteAccess, principal: Principal, access: ModelAccess) -> _Checked:
    """The operation, a description of the target and the decision for ``request`` (nothing is changed)."""
    roles = principal.roles
    store = access.store
    policy = access.policy
    match_info = request.match_info
    kind = route.kind
    operation = route.operation or _UPDATE
    if kind is TargetKind.LISTING:
        rules = policy.rules_for(roles, operation)
        allowed = bool(rules.allow)
        return _Checked(operation, "the listing", Decision(allowed, "filtered" if allowed else "no rule allows it"))
    if kind is TargetKind.REPOSITORY:
        return _Checked(
            operation,
            "the whole repository",
            _as_read_too(operation, lambda checked: policy.decide(roles, checked, REPOSITORY)),
        )
    if kind is TargetKind.SERIALIZATION:
        return _check_serialization(request, roles, access)
    if kind is TargetKind.SHELL:
        shell_id = decode_identifier(match_info["aasIdentifier"], "aasIdentifier")
        if route.operation is None:
            operation = _UPDATE if _exists(lambda: store.shell(shell_id)) else _CREATE
        return _Checked(
            operation, f"shell {shell_id!r}", policy.decide(roles, operation, access.shell_target(shell_id))
        )
    if kind is TargetKind.CONCEPT_DESCRIPTION:
        identifier = decode_identifier(match_info["cdIdentifier"], "cdIdentifier")
        if route.operation is None:
            operation = _UPDATE if _exists(lambda: store.concept_description(identifier)) else _CREATE
        return _Checked(
            operation,
            f"concept description {identifier!r}",
            policy.decide(roles, operation, access.concept_description_target(identifier)),
        )
    if kind is TargetKind.ALARM:
        return _check_alarm(request, roles, operation, access)
    if kind is TargetKind.SIMULATION:
        return await _check_simulation(request, roles, operation, access)
    if kind is TargetKind.PACKAGE:
        package_id = decode_identifier(match_info["packageId"], "packageId")
        package = await request.app[PACKAGES_KEY].get(package_id)
        decision = await _decide_package(package, roles, operation, access)
        if decision.allowed and operation is _EXPORT:
            decision = await _decide_package(package, roles, _READ, access)
        return _Checked(operation, f"package {package_id!r}", decision)
    submodel_id = decode_identifier(match_info["submodelIdentifier"], "submodelIdentifier")
    path = canonical_path(match_info["idShortPath"]) if "idShortPath" in match_info else ""
    description = f"submodel {submodel_id!r}" + (f" element {path!r}" if path else "")
    if kind is TargetKind.CONTAINER:
        return _Checked(
            operation, description, policy.decide(roles, operation, access.element_target(submodel_id, path))
        )
    if route.operation is None:
        if path:
            operation = _UPDATE if _exists(lambda: store.element(submodel_id, path)) else _CREATE
        else:
            operation = _UPDATE if _exists(lambda: store.submodel(submodel_id)) else _CREATE
    if operation is _CREATE:
        return _Checked(
            operation, description, policy.decide(roles, operation, access.element_target(submodel_id, path))
        )
    scope = access.scope(roles, operation, submodel_id, path)
    if operation in (_READ, _EXPORT):
        allowed = scope.kind is not ScopeKind.NONE
    else:
        allowed = scope.kind is ScopeKind.ALL
        if not allowed and scope.kind is ScopeKind.PARTIAL:
            return _Checked(operation, description, Decision(False, "not allowed on every element it holds"))
    return _Checked(operation, description, Decision(allowed, scope.reason))


def _check_alarm(
    request: web.Request, roles: frozenset[str], operation: AccessOperation, access: ModelAccess
) -> _Checked:
    """An alarm action needs the operation on all of the rule's element; an unknown alarm (or a hub
    without alarms) on the whole repository, so that the ``404`` tells only those who may act."""
    alarm_id = request.match_info["alarmId"]
    source = request.app.get(ALARMS_KEY)
    try:
        if source is None:
            raise NotFoundError(f"no alarm {alarm_id!r}")
        element = source.rule_of(alarm_id).element
    except NotFoundError:
        return _Checked(operation, f"alarm {alarm_id!r}", access.policy.decide(roles, operation, REPOSITORY))
    scope = access.scope(roles, operation, element.submodel, element.path)
    description = f"alarm {alarm_id!r} on submodel {element.submodel!r} element {element.path!r}"
    return _Checked(operation, description, Decision(scope.kind is ScopeKind.ALL, scope.reason))


async def _simulation_shells(request: web.Request) -> list[str] | None:
    """The process shells a simulation request is about: the job's (``jobId``), the jobs' of a comparison, or
    the body's ``shell``; ``None`` when the request names none the check can see (an unknown job, a bad body)."""
    jobs = request.app.get(SIMULATIONS_KEY)
    if jobs is None:
        return None
    try:
        if "jobId" in request.match_info:
            return [jobs.job(request.match_info["jobId"]).shell]
        raw = await request.read()  # aiohttp keeps the body: the handler reads it again
        data = orjson.loads(raw) if len(raw) <= request.app[MAX_BODY_KEY] else None
        if not isinstance(data, dict):
            return None
        if isinstance(data.get("baseline"), str) and isinstance(data.get("candidate"), str):
            return [jobs.job(data["baseline"]).shell, jobs.job(data["candidate"]).shell]
        shell = data.get("shell")
        return [shell] if isinstance(shell, str) and shell else None
    except (NotFoundError, orjson.JSONDecodeError):
        return None


async def _check_simulation(
    request: web.Request, roles: frozenset[str], operation: AccessOperation, access: ModelAccess
) -> _Checked:
    """``simulate`` on every process shell the request is about; a request naming none (unknown job, bad body)
    needs some rule allowing ``simulate``, so that its ``404``/``400`` tells only those who may simulate."""
    shells = await _simulation_shells(request)
    if shells is None:
        allowed = bool(access.policy.rules_for(roles, operation).allow)
        return _Checked(
            operation, "simulations", Decision(allowed, "some rule allows it" if allowed else "no rule allows it")
        )
    for shell_id in shells:
        decision = access.policy.decide(roles, operation, access.shell_target(shell_id))
        if not decision.allowed:
            return _Checked(operation, f"simulations of shell {shell_id!r}", decision)
    return _Checked(operation, f"simulations of shell {shells[0]!r}", decision)


def _as_read_too(operation: AccessOperation, decide: Callable[[AccessOperation], Decision]) -> Decision:
    """``decide(operation)``, and for an *export* also ``decide(read)``: an export hands out what it holds, so
    what a caller may not read it may not export either (a deny rule on reads holds for exports too)."""
    decision = decide(operation)
    if decision.allowed and operation is _EXPORT:
        read = decide(_READ)
        if not read.allowed:
            return Decision(False, f"an export is a read too: {read.reason}")
    return decision


async def _decide_package(
    package: StoredPackage | None, roles: frozenset[str], operation: AccessOperation, access: ModelAccess
) -> Decision:
    """A package needs every object its file holds (``package_access.decide_package``); a missing one needs
    the whole repository."""
    if package is None:
        return access.policy.decide(roles, operation, REPOSITORY)
    if access.policy.rules_for(roles, operation).unrestricted:
        return Decision(True, "allowed for every target")
    return decide_package(await package_contents(package), roles, operation, access)


async def check_package_replacement(request: web.Request, package: StoredPackage) -> None:
    """Refuse (``AccessDeniedError``) replacing the file of ``package`` unless the caller may delete it: an upload
    over an existing package id removes the file that is there, which may hold what the caller cannot touch."""
    access: RequestAccess | None = request.get(ACCESS_KEY)
    if access is None:
        return
    decision = await _decide_package(package, access.roles, _DELETE, access.model)
    if not decision.allowed:
        raise AccessDeniedError(
            f"{access.principal.name!r} may not replace package {package.package_id!r}: that removes the file there, "
            f"which needs the rights to delete it ({decision.reason})"
        )


def _check_serialization(request: web.Request, roles: frozenset[str], access: ModelAccess) -> _Checked:
    shell_ids = [decode_identifier(text, "aasIds value") for text in request.query.getall("aasIds", [])]
    submodel_ids = [decode_identifier(text, "submodelIds value") for text in request.query.getall("submodelIds", [])]
    if not shell_ids and not submodel_ids:
        allowed = all(access.policy.rules_for(roles, operation).allow for operation in (_EXPORT, _READ))
        return _Checked(_EXPORT, "the repository", Decision(allowed, "filtered" if allowed else "no rule allows it"))
    for shell_id in shell_ids:
        decision = _as_read_too(
            _EXPORT, functools.partial(access.policy.decide, roles, target=access.shell_target(shell_id))
        )
        if not decision.allowed:
            return _Checked(_EXPORT, f"shell {shell_id!r}", decision)
    for submodel_id in submodel_ids:
        for checked in (_EXPORT, _READ):
            scope = access.scope(roles, checked, submodel_id)
            if scope.kind is not ScopeKind.ALL:
                reason = f"{checked.value}: {scope.reason}"
                return _Checked(_EXPORT, f"submodel {submodel_id!r}", Decision(False, reason))
    return _Checked(_EXPORT, "the selected objects", Decision(True, "allowed for every selected object"))


# --- helpers for the handlers --------------------------------------------------------------------


def _reading(request: web.Request) -> RequestAccess | None:
    """The access of a read request that may have to be filtered; ``None`` when nothing is hidden."""
    access: RequestAccess | None = request.get(ACCESS_KEY)
    if access is None or not access.reads or access.unrestricted(AccessOperation.READ):
        return None
    return access


def _readable_by_id(
    request: web.Request, target_of: Callable[[str], Target]
) -> Callable[[model.Identifiable], bool] | None:
    """The identifiables a listing may show, each judged on ``target_of`` its id (``None``: all)."""
    access = _reading(request)
    if access is None:
        return None
    policy, roles = access.model.policy, access.roles
    return lambda identifiable: policy.decide(roles, _READ, target_of(identifiable.id)).allowed


def shell_filter(request: web.Request) -> Callable[[model.AssetAdministrationShell], bool] | None:
    """The shells a listing may show (``None``: all)."""
    return _readable_by_id(request, ModelAccess.shell_target)


def submodel_filter(request: web.Request) -> Callable[[model.Submodel], bool] | None:
    """The submodels a listing may show: those with anything readable (``None``: all)."""
    access = _reading(request)
    if access is None:
        return None
    return lambda submodel: access.model.scope(access.roles, _READ, submodel.id).kind is not ScopeKind.NONE


def concept_description_filter(request: web.Request) -> Callable[[model.ConceptDescription], bool] | None:
    """The concept descriptions a listing may show (``None``: all)."""
    return _readable_by_id(request, ModelAccess.concept_description_target)


def package_filter(request: web.Request) -> Callable[[StoredPackage], Awaitable[bool]] | None:
    """The packages a listing may show: those whose every object may be read (``None``: all)."""
    access = _reading(request)
    if access is None:
        return None

    async def readable(package: StoredPackage) -> bool:
        return (await _decide_package(package, access.roles, _READ, access.model)).allowed

    return readable


def _limited_read(
    request: web.Request, submodel_id: str, id_short_path: str = ""
) -> tuple[RequestAccess, Scope] | None:
    """The caller's access and what it may read of the submodel (``""``) or the element at ``id_short_path``;
    ``None`` when that is all of it."""
    access = _reading(request)
    if access is None:
        return None
    scope = access.model.scope(access.roles, _READ, submodel_id, id_short_path)
    return None if scope.kind is ScopeKind.ALL else (access, scope)


def submodel_view(request: web.Request, submodel_id: str) -> model.Submodel | None:
    """``None`` when the caller may read all of the submodel (serve it as it is), else a pruned copy."""
    limited = _limited_read(request, submodel_id)
    if limited is None:
        return None
    access, scope = limited
    if scope.kind is ScopeKind.NONE:
        raise AccessDeniedError(f"{access.principal.name!r} may not read submodel {submodel_id!r}")
    return access.model.pruned_submodel(submodel_id, scope)


def element_view(request: web.Request, submodel_id: str, id_short_path: str) -> model.SubmodelElement | None:
    """``None`` when the caller may read all of the element (serve it as it is), else a pruned copy."""
    limited = _limited_read(request, submodel_id, id_short_path)
    if limited is None:
        return None
    access, scope = limited
    if scope.kind is ScopeKind.NONE:
        raise AccessDeniedError(f"{access.principal.name!r} may not read {id_short_path!r} of {submodel_id!r}")
    return paths.resolve(access.model.pruned_submodel(submodel_id, scope, id_short_path), id_short_path)


def visible_elements(
    request: web.Request, submodel_id: str, elements: Collection[model.SubmodelElement]
) -> Collection[model.SubmodelElement]:
    """The top-level elements of a submodel a listing may show (with anything readable)."""
    limited = _limited_read(request, submodel_id)
    if limited is None:
        return elements
    _, scope = limited
    return [element for element in elements if scope.keeps(str(element.id_short))]


def exportable(request: web.Request, identifiables: list[model.Identifiable]) -> list[model.Identifiable]:
    """The identifiables of an export the caller may export whole (all, without access control)."""
    access: RequestAccess | None = request.get(ACCESS_KEY)
    if access is None or (access.unrestricted(_EXPORT) and access.unrestricted(_READ)):
        return identifiables
    policy, roles, model_access = access.model.policy, access.roles, access.model
    shown: list[model.Identifiable] = []
    for identifiable in identifiables:
        allowed = True
        for operation in (_EXPORT, _READ):  # an export is a read: what may not be read is not exported
            if isinstance(identifiable, model.Submodel):
                allowed = model_access.scope(roles, operation, identifiable.id).kind is ScopeKind.ALL
            elif isinstance(identifiable, model.AssetAdministrationShell):
                allowed = policy.decide(roles, operation, model_access.shell_target(identifiable.id)).allowed
            else:
                target = model_access.concept_description_target(identifiable.id)
                allowed = policy.decide(roles, operation, target).allowed
            if not allowed:
                break
        if allowed:
            shown.append(identifiable)
    return shown


# --- changes that could widen the caller's own rights --------------------------------------------


def referenced_submodels(shell: model.AssetAdministrationShell | None) -> frozenset[str]:
    """The ids of the submodels a shell references (none for ``None``)."""
    if shell is None:
        return frozenset()
    return frozenset(reference.key[0].value for reference in shell.submodel if reference.key)


def check_references(
    request: web.Request,
    shell_id: str,
    after: model.AssetAdministrationShell | None,
    *,
    created: Collection[str] = (),
) -> None:
    """Refuse (``AccessDeniedError``) a change of shell ``shell_id`` to ``after`` (``None``: deleting it) that
    would give the caller rights on a submodel it does not have now.

    Rules scoped by shell cover the submodels the shell references. A reference the change adds (or
    removes, where a deny rule scoped by shell followed it) is allowed only when the caller's rights on
    that submodel stay what they are: so a caller cannot pull another submodel into its shells. Submodels
    in ``created`` are being created by the same change (a package upload) and are the caller's anyway.
    Does nothing when access control is off or the caller may do everything.
    """
    access: RequestAccess | None = request.get(ACCESS_KEY)
    if access is None:
        return
    model_access = access.model
    try:
        before: model.AssetAdministrationShell | None = model_access.store.shell(shell_id)
    except NotFoundError:
        before = None
    old, new = referenced_submodels(before), referenced_submodels(after)
    for submodel_id in sorted(old ^ new):
        if submodel_id in created:
            continue
        current = model_access.shells_of(submodel_id)
        changed = current - {shell_id} if submodel_id in old else current | {shell_id}
        gained = model_access.gained_by_references(access.roles, submodel_id, current, changed)
        if gained:
            change = "reference" if submodel_id in new else "remove the reference to"
            raise AccessDeniedError(
                f"{access.principal.name!r} may not {change} submodel {submodel_id!r} in shell {shell_id!r}: "
                f"that would give it {', '.join(operation.value for operation in gained)} rights on the submodel "
                "that it does not have on the submodel itself"
            )


def check_kept_content(
    request: web.Request,
    submodel_id: str,
    id_short_path: str,
    replacement: model.Submodel | model.SubmodelElement,
) -> None:
    """Refuse (``AccessDeniedError``) a change that keeps what a submodel or element holds (a ``PATCH``) but
    would let the caller do more with it than now: another semanticId that a rule follows, say.

    Rules on semantic ids cover the elements below the one carrying it, so whoever may update an element
    could otherwise read or invoke what it holds by relabelling it. A full replacement (``PUT``) brings
    its own content and is not checked. Does nothing when access control is off or the caller may do
    everything.
    """
    access: RequestAccess | None = request.get(ACCESS_KEY)
    if access is None:
        return
    gained = access.model.gained_by_replacement(access.roles, submodel_id, id_short_path, replacement)
    if gained:
        what = (
            f"element {id_short_path!r} of submodel {submodel_id!r}" if id_short_path else f"submodel {submodel_id!r}"
        )
        raise AccessDeniedError(
            f"{access.principal.name!r} may not change {what} this way: that would give it "
            f"{', '.join(operation.value for operation in gained)} rights on what it holds that it does not have now"
        )
