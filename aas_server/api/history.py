"""History of a recorded element over REST (an extension of IDTA-01002 Part 2 beside the Submodel interface).

``GET .../submodel-elements/{idShortPath}/history`` under both submodel bases and both API releases:

- raw: ``from``, ``to`` (RFC 3339; ``[from, to)``, both optional), ``limit`` and ``cursor`` (Part 2
  paging, ``PagedResult``); each item ``{"timestamp", "serverTimestamp", "value", "quality",
  "qualityReason"}``, ordered by source time;
- aggregated: ``interval`` (seconds or an ISO 8601 duration such as ``PT1M``) and ``aggregate``
  (``min``, ``max``, ``avg``, ``count``, ``first``, ``last``, comma-separated; all but first and
  last when absent), one item per interval ``{"from", "to", "min": ...}``, empty intervals included.

Errors are ``Result`` bodies (``api/errors.py``): a malformed time, interval or aggregate ``400``;
an element that does not exist, or is not recorded (only mapped Properties are), ``404``.
See ``docs/history.md``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aas_server.api.context import store_of
from aas_server.api.paging import Page, parse_page_request
from aas_server.api.resources import element_path_of, submodel_id_of
from aas_server.api.routing import RouteTable
from aas_server.api.serialization import json_response
from aas_server.errors import InvalidRequestError, NotFoundError
from aas_server.model import values
from aas_server.store.history import (
    Aggregate,
    AggregateQuery,
    HistorySample,
    HistorySource,
    IntervalAggregate,
    RawQuery,
    SampleKey,
    format_time,
    parse_aggregates,
    parse_interval,
    parse_time,
)

HISTORY_KEY: web.AppKey[HistorySource] = web.AppKey("history")
"""The recorded history the routes read (set by ``create_app(history=...)``)."""

DEFAULT_LIMIT = 1000
"""Items per page when the request gives no ``limit``."""
MAXIMUM_LIMIT = 10_000
"""Most items of one page, whatever ``limit`` asks for."""
DEFAULT_AGGREGATES = (Aggregate.MIN, Aggregate.MAX, Aggregate.AVG, Aggregate.COUNT)

routes = RouteTable()


def _sample_json(sample: HistorySample) -> dict[str, Any]:
    return {
        "timestamp": format_time(sample.source_time),
        "serverTimestamp": format_time(sample.server_time),
        "value": values.to_json_value(sample.value),
        "quality": sample.quality.value,
        "qualityReason": sample.reason.value,
    }


def _interval_json(interval: IntervalAggregate, aggregates: tuple[Aggregate, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {"from": format_time(interval.start), "to": format_time(interval.end)}
    for aggregate in aggregates:
        value = interval.value_of(aggregate)
        row[aggregate.value] = value if aggregate is Aggregate.COUNT else values.to_json_value(value)
    return row


@routes.get("/submodel-elements/{idShortPath}/history")
async def get_history(request: web.Request) -> web.Response:
    """The recorded samples of an element, or their aggregates per interval."""
    history = request.app[HISTORY_KEY]
    submodel_id, path = submodel_id_of(request), element_path_of(request)
    if not history.is_recorded(submodel_id, path):
        store_of(request).element(submodel_id, path)
        raise NotFoundError(
            f"{path!r} in submodel {submodel_id!r} has no history: only device-fed (mapped) Properties are recorded"
        )
    query = request.query
    start = parse_time(query["from"], "from") if "from" in query else None
    end = parse_time(query["to"], "to") if "to" in query else None
    if start is not None and end is not None and end < start:
        raise InvalidRequestError("to must not be before from")
    paging = parse_page_request(query)
    limit = min(paging.limit or DEFAULT_LIMIT, MAXIMUM_LIMIT)
    if "interval" not in query:
        if "aggregate" in query:
            raise InvalidRequestError("aggregate needs an interval (seconds or an ISO 8601 duration such as PT1M)")
        after = SampleKey.from_cursor(paging.cursor) if paging.cursor is not None else None
        page = await history.read_raw(RawQuery(submodel_id, path, start, end, limit, after))
        result = Page(page.samples, page.next_after.to_cursor() if page.next_after else None)
        return json_response(result.to_json(_sample_json))
    interval = parse_interval(query["interval"])
    aggregates = tuple(parse_aggregates(query["aggregate"])) if "aggregate" in query else DEFAULT_AGGREGATES
    if paging.cursor is not None:
        start = parse_time(paging.cursor, "cursor")
    aggregated = await history.read_aggregates(
        AggregateQuery(submodel_id, path, start, end, interval, aggregates, limit)
    )
    next_cursor = format_time(aggregated.next_start) if aggregated.next_start else None
    rows = Page(aggregated.intervals, next_cursor)
    return json_response(rows.to_json(lambda interval: _interval_json(interval, aggregates)))
