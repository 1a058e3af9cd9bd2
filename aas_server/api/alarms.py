"""The alarm list and the operators' actions on alarms, over REST (``docs/analytics.md``).

Routes (under each API prefix), present when the hub has monitoring rules (``create_app(alarms=...)``):

- ``GET /alarms``: the alarms the caller may read (it may read the rule's element), each
  ``Alarm.to_dict()`` with ``id``, ``kind``, ``element`` (``submodel``, ``path``), ``retain``;
  filters ``shell`` (base64url shell id: alarms on elements of submodels that shell references),
  ``severity`` (the least severity, 1..1000) and ``state`` (``active``, ``inactive``,
  ``unacknowledged``, ``unconfirmed``, ``shelved``, ``retained``, ``disabled``); paged with ``limit``
  and ``cursor`` like the other listings;
- ``POST /alarms/{alarmId}/acknowledge``, ``/confirm``, ``/comment``, ``/shelve``, ``/unshelve``: body
  ``{"comment": "..."}`` (required for ``comment``), ``/shelve`` also ``{"duration": seconds}`` (timed;
  without it one-shot). Answer: ``{"alarm": ..., "transition": ...}``. They are the access operation
  ``acknowledge`` on the rule's element (``api/auth.py``). An action that does not fit the alarm's
  state is a ``409`` Result naming the reason; an unknown alarm ``404``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from aas_server.analytics.alarms import Alarm, AlarmTransition, Shelving
from aas_server.analytics.source import AlarmSource
from aas_server.api.auth import ACCESS_KEY
from aas_server.api.context import ALARMS_KEY, store_of
from aas_server.api.paging import PageRequest, page_positions, parse_page_request
from aas_server.api.routing import RouteTable
from aas_server.api.serialization import decode_identifier, json_response, read_json_object
from aas_server.config import AccessOperation
from aas_server.errors import InvalidRequestError, NotFoundError
from aas_server.security.scopes import ScopeKind
from aas_server.store.twin_store import TwinStore

routes = RouteTable()

MAX_COMMENT = 4096
"""Longest operator comment, in characters."""

_STATES: dict[str, Callable[[Alarm], bool]] = {
    "active": lambda alarm: alarm.active,
    "inactive": lambda alarm: not alarm.active,
    "unacknowledged": lambda alarm: not alarm.acknowledged,
    "unconfirmed": lambda alarm: not alarm.confirmed,
    "shelved": lambda alarm: alarm.shelving is not Shelving.UNSHELVED,
    "retained": lambda alarm: alarm.retain,
    "disabled": lambda alarm: not alarm.enabled,
}


def _source(request: web.Request) -> AlarmSource:
    return request.app[ALARMS_KEY]


def alarm_json(source: AlarmSource, alarm: Alarm) -> dict[str, Any]:
    rule = source.rule_of(alarm.name)
    data = alarm.to_dict()
    data["id"] = alarm.name
    data["kind"] = rule.kind
    data["element"] = {"submodel": rule.element.submodel, "path": rule.element.path}
    data["retain"] = alarm.retain
    return data


def _shell_submodels(store: TwinStore, shell_id: str) -> set[str]:
    """The ids of the submodels the shell references; none for an unknown shell (the list is empty, as
    other listings' filters are)."""
    try:
        shell = store.shell(shell_id)
    except NotFoundError:
        return set()
    return {reference.key[0].value for reference in shell.submodel if reference.key}


def _severity(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        severity = int(text)
    except ValueError:
        raise InvalidRequestError(f"query parameter severity={text!r} is not an integer") from None
    if not 1 <= severity <= 1000:
        raise InvalidRequestError(f"query parameter severity={severity} must be between 1 and 1000")
    return severity


@routes.get("/alarms")
async def get_alarms(request: web.Request) -> web.Response:
    """The alarms the caller may read, filtered by ``shell``, ``severity`` (least) and ``state``; paged."""
    source = _source(request)
    query = request.query
    paging: PageRequest = parse_page_request(query)
    least = _severity(query.get("severity"))
    state = query.get("state")
    if state is not None and state not in _STATES:
        raise InvalidRequestError(f"query parameter state={state!r} is not one of {', '.join(_STATES)}")
    submodels: set[str] | None = None
    if "shell" in query:
        submodels = _shell_submodels(store_of(request), decode_identifier(query["shell"], "shell"))
    access = request.get(ACCESS_KEY)
    selected: list[Alarm] = []
    for alarm in sorted(source.alarms(), key=lambda alarm: alarm.name):
        rule = source.rule_of(alarm.name)
        if least is not None and alarm.severity < least:
            continue
        if state is not None and not _STATES[state](alarm):
            continue
        if submodels is not None and rule.element.submodel not in submodels:
            continue
        if access is not None:
            scope = access.model.scope(access.roles, AccessOperation.READ, rule.element.submodel, rule.element.path)
            if scope.kind is ScopeKind.NONE:
                continue
        selected.append(alarm)
    page = page_positions(selected, paging, lambda alarm: alarm.name)
    return json_response(page.to_json(lambda alarm: alarm_json(source, alarm)))


async def _body(request: web.Request) -> dict[str, Any]:
    if not (await request.read()).strip():  # aiohttp keeps the body: read_json_object reads it again from memory
        return {}
    data = await read_json_object(request, "alarm action")
    unknown = set(data) - {"comment", "duration"}
    if unknown:
        raise InvalidRequestError(f"unknown body members: {', '.join(sorted(unknown))}")
    return data


def _comment(data: dict[str, Any], required: bool = False) -> str | None:
    comment = data.get("comment")
    if comment is None:
        if required:
            raise InvalidRequestError("comment: a comment is required")
        return None
    if not isinstance(comment, str):
        raise InvalidRequestError(f"comment: must be a string, got {type(comment).__name__}")
    if len(comment) > MAX_COMMENT:
        raise InvalidRequestError(f"comment: longer than {MAX_COMMENT} characters")
    if required and not comment.strip():
        raise InvalidRequestError("comment: a comment is required")
    return comment


def _user(request: web.Request) -> str:
    access = request.get(ACCESS_KEY)
    return access.principal.name if access is not None else "anonymous"


def _alarm_id(request: web.Request) -> str:
    alarm_id = request.match_info["alarmId"]
    _source(request).rule_of(alarm_id)  # NotFoundError (404) for an unknown alarm
    return alarm_id


def _answer(source: AlarmSource, transition: AlarmTransition) -> web.Response:
    alarm = next((each for each in source.alarms() if each.name == transition.alarm), None)
    if alarm is None:
        raise NotFoundError(f"no alarm {transition.alarm!r}")
    return json_response({"alarm": alarm_json(source, alarm), "transition": transition.as_dict()})


async def _operator_request(request: web.Request) -> tuple[AlarmSource, str, str, str | None]:
    """The alarm source, the addressed alarm, the user and the body's optional ``comment`` of an operator action."""
    alarm_id = _alarm_id(request)
    comment = _comment(await _body(request))
    return _source(request), alarm_id, _user(request), comment


@routes.post("/alarms/{alarmId}/acknowledge")
async def acknowledge_alarm(request: web.Request) -> web.Response:
    source, alarm_id, user, comment = await _operator_request(request)
    return _answer(source, await source.acknowledge(alarm_id, user, comment))


@routes.post("/alarms/{alarmId}/confirm")
async def confirm_alarm(request: web.Request) -> web.Response:
    source, alarm_id, user, comment = await _operator_request(request)
    return _answer(source, await source.confirm(alarm_id, user, comment))


@routes.post("/alarms/{alarmId}/comment")
async def comment_alarm(request: web.Request) -> web.Response:
    alarm_id = _alarm_id(request)
    comment = _comment(await _body(request), required=True)
    assert comment is not None
    source = _source(request)
    return _answer(source, await source.add_comment(alarm_id, _user(request), comment))


@routes.post("/alarms/{alarmId}/shelve")
async def shelve_alarm(request: web.Request) -> web.Response:
    alarm_id = _alarm_id(request)
    data = await _body(request)
    comment = _comment(data)
    duration = data.get("duration")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int | float) or not 0 < duration <= 31_536_000
    ):
        raise InvalidRequestError(f"duration: must be seconds above 0 and at most a year, got {duration!r}")
    kind = Shelving.ONE_SHOT if duration is None else Shelving.TIMED
    source = _source(request)
    seconds = float(duration) if duration is not None else None
    return _answer(source, await source.shelve(alarm_id, _user(request), kind, seconds, comment))


@routes.post("/alarms/{alarmId}/unshelve")
async def unshelve_alarm(request: web.Request) -> web.Response:
    source, alarm_id, user, comment = await _operator_request(request)
    return _answer(source, await source.unshelve(alarm_id, user, comment))
