"""OPC UA HistoryRead of the projected Property variables over the hub's history (OPC 10000-11, OPC 10000-13).

:class:`ProjectionHistory` takes the place of asyncua's ``HistoryManager``: the HistoryRead service
of the projection's server reads a :class:`~aas_server.store.history.HistorySource`, the same
history the REST route serves, so both return the same samples for the same range. The variables of
recorded (mapped) Properties are marked ``Historizing`` with the ``HistoryRead`` access level bit,
at start and again whenever a model change re-projects their submodel.

- ``ReadRawModifiedDetails`` (read raw, OPC 10000-11 §6.5.3): forward ``[startTime, endTime)``,
  backward (``endTime < startTime``, or ``endTime`` and ``numValuesPerNode`` alone) newest first;
  at most ``numValuesPerNode`` (0: all, up to ``MAXIMUM_VALUES``) per call, then a continuation
  point. Each sample is a ``DataValue`` with its value, the status code of its quality (a bad one
  carries no value, OPC 10000-4 §7.7.1), and the timestamps ``timestampsToReturn`` asks for.
- ``ReadProcessedDetails`` (OPC 10000-13 §5.4): the aggregates ``Minimum``, ``Maximum``,
  ``Average``, ``Count``, ``Start`` and ``End`` per ``processingInterval`` (0: one interval),
  computed by the history over the samples that are not bad; an interval without such samples is
  ``BadNoData`` (``Count``: 0). Each value's source timestamp is its interval's start.

Left out: bounding values (``returnBounds`` is ignored), read modified (no sample is ever modified:
an empty ``HistoryModifiedData``), ``ReadAtTimeDetails``, events, HistoryUpdate (``BadNotWritable``),
backward processed reads, the aggregate configuration, and the historian bits of aggregate status codes.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from asyncua import ua
from asyncua.server.history import HistoryManager
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from aas_server.errors import HubError, InvalidRequestError
from aas_server.opcua.address_space import ProjectedAddressSpace
from aas_server.opcua.projection import parent_path
from aas_server.opcua.sync import ModelChangeHandler, Resynchronizer
from aas_server.opcua.writes import PropertyTarget
from aas_server.opcua_common.status import status
from aas_server.opcua_common.variants import data_value, to_variant
from aas_server.store.history import (
    Aggregate,
    AggregateQuery,
    HistorySample,
    HistorySource,
    IntervalAggregate,
    RawQuery,
    SampleKey,
)
from aas_server.store.twin_store import ModelChanged, TwinStore

_LOG = logging.getLogger(__name__)

MAXIMUM_VALUES = 10_000
"""Most values (or intervals) returned per node and call; more come with a continuation point."""

_UNSPECIFIED = datetime(1601, 1, 2, tzinfo=UTC)
"""Times before this are ``DateTime.MinValue`` (OPC 10000-6 §5.2.2.5): not specified."""

AGGREGATES: dict[int, Aggregate] = {
    ObjectIds.AggregateFunction_Minimum: Aggregate.MIN,
    ObjectIds.AggregateFunction_Maximum: Aggregate.MAX,
    ObjectIds.AggregateFunction_Average: Aggregate.AVG,
    ObjectIds.AggregateFunction_Count: Aggregate.COUNT,
    ObjectIds.AggregateFunction_Start: Aggregate.FIRST,
    ObjectIds.AggregateFunction_End: Aggregate.LAST,
}
"""The supported aggregate functions (namespace 0 object ids)."""

_HISTORY_READ = ua.AccessLevel.HistoryRead.mask
_SLICE = 500
"""Variables marked between two yields to the event loop."""


def _time(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return None if moment < _UNSPECIFIED else moment


def _result(code: int) -> ua.HistoryReadResult:
    result = ua.HistoryReadResult()
    result.StatusCode = status(code)
    return result


class ProjectionHistory(HistoryManager):
    """The HistoryRead service of one projection's server, over ``source``."""

    def __init__(
        self, server: Server, address_space: ProjectedAddressSpace, store: TwinStore, source: HistorySource
    ) -> None:
        super().__init__(server.iserver)
        self._server = server
        self._address_space = address_space
        self._store = store
        self._source = source

    # --- Historizing and AccessLevel --------------------------------------------------------------

    async def mark(self, submodel_id: str | None = None, id_short_path: str | None = None) -> None:
        """Mark the variables of recorded Properties as historizing: all, one submodel's, or those below the
        parent of the element at ``id_short_path`` (a change there may have re-added its siblings too)."""
        nodes = self._address_space.value_nodes
        if submodel_id is None:
            keys = list(nodes)
        else:
            # the projected Properties below the parent, from the projection's own index: no walk over the
            # submodel (40,000 elements would hold the event loop), and the loop below yields in slices
            parent = parent_path(id_short_path) if id_short_path else None
            below = (parent + ".", parent + "[") if parent else None
            keys = [key for key in nodes if key[0] == submodel_id and (below is None or key[1].startswith(below))]
        aspace = self._server.iserver.aspace
        for index, key in enumerate(keys):
            if index % _SLICE == _SLICE - 1:
                await asyncio.sleep(0)
            target = nodes.get(key)
            if target is None or not self._source.is_recorded(*key):
                continue
            node_id = target[0]
            for attribute in (AttributeIds.AccessLevel, AttributeIds.UserAccessLevel):
                current = aspace.read_attribute_value(node_id, attribute)
                level = int(current.Value.Value) if current.Value is not None and current.Value.Value else 0
                if not level & _HISTORY_READ:
                    await self._server.write_attribute_value(
                        node_id, ua.DataValue(ua.Variant(level | _HISTORY_READ, ua.VariantType.Byte)), attribute
                    )
            historizing = aspace.read_attribute_value(node_id, AttributeIds.Historizing)
            if historizing.Value is None or historizing.Value.Value is not True:
                await self._server.write_attribute_value(
                    node_id, ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)), AttributeIds.Historizing
                )

    def following(
        self, apply_model_change: ModelChangeHandler, resynchronize: Resynchronizer
    ) -> tuple[ModelChangeHandler, Resynchronizer]:
        """The store sync's model change handler and resynchronizer, each marking what it re-projected."""

        async def apply(change: ModelChanged) -> None:
            await apply_model_change(change)
            await self.mark(change.identifiable_id, change.id_short_path)

        async def resynchronize_all() -> None:
            await resynchronize()
            await self.mark()

        return apply, resynchronize_all

    # --- HistoryRead --------------------------------------------------------------------------------

    async def read_history(self, params: ua.HistoryReadParameters) -> list[ua.HistoryReadResult]:
        details = params.HistoryReadDetails
        results: list[ua.HistoryReadResult] = []
        if isinstance(details, ua.ReadProcessedDetails) and len(details.AggregateType) != len(params.NodesToRead):
            return [_result(StatusCodes.BadAggregateListMismatch) for _ in params.NodesToRead]
        for index, node in enumerate(params.NodesToRead):
            if params.ReleaseContinuationPoints:
                results.append(_result(StatusCodes.Good))
                continue
            target = self._address_space.property_targets.get(node.NodeId)
            if target is None:
                known = node.NodeId in self._server.iserver.aspace
                results.append(
                    _result(StatusCodes.BadHistoryOperationUnsupported if known else StatusCodes.BadNodeIdUnknown)
                )
                continue
            if not self._source.is_recorded(target.submodel_id, target.id_short_path):
                results.append(_result(StatusCodes.BadHistoryOperationUnsupported))
                continue
            try:
                if isinstance(details, ua.ReadRawModifiedDetails):
                    results.append(await self._read_raw(details, node, target, params.TimestampsToReturn))
                elif isinstance(details, ua.ReadProcessedDetails):
                    results.append(await self._read_processed(details, node, target, details.AggregateType[index]))
                else:
                    results.append(_result(StatusCodes.BadHistoryOperationUnsupported))
            except InvalidRequestError:
                results.append(_result(StatusCodes.BadContinuationPointInvalid))
            except HubError as error:
                _LOG.error("OPC UA HistoryRead of %s failed: %s", target.id_short_path, error)
                results.append(_result(StatusCodes.BadInternalError))
        return results

    async def _read_raw(
        self,
        details: ua.ReadRawModifiedDetails,
        node: ua.HistoryReadValueId,
        target: PropertyTarget,
        timestamps: ua.TimestampsToReturn,
    ) -> ua.HistoryReadResult:
        if details.IsReadModified:
            result = _result(StatusCodes.GoodNoData)
            result.HistoryData = ua.HistoryModifiedData()
            return result
        start, end = _time(details.StartTime), _time(details.EndTime)
        count = int(details.NumValuesPerNode)
        if start is None and (end is None or count == 0):
            return _result(StatusCodes.BadHistoryOperationInvalid)
        reverse = start is None or (end is not None and end < start)
        bounded = start is not None and end is not None
        if start is None:
            start, end = end, None
        limit = min(count, MAXIMUM_VALUES) if count else MAXIMUM_VALUES
        after = SampleKey.from_cursor(bytes(node.ContinuationPoint).decode()) if node.ContinuationPoint else None
        page = await self._source.read_raw(
            RawQuery(target.submodel_id, target.id_short_path, start, end, limit, after, reverse)
        )
        result = ua.HistoryReadResult()
        result.StatusCode = status(StatusCodes.Good if page.samples else StatusCodes.GoodNoData)
        result.HistoryData = ua.HistoryData(
            DataValues=[_sample_value(sample, target.variant_type, timestamps) for sample in page.samples]
        )
        if page.next_after is not None and (count == 0 or count > limit or bounded):
            result.ContinuationPoint = page.next_after.to_cursor().encode()
        return result

    async def _read_processed(
        self,
        details: ua.ReadProcessedDetails,
        node: ua.HistoryReadValueId,
        target: PropertyTarget,
        aggregate_type: ua.NodeId,
    ) -> ua.HistoryReadResult:
        aggregate = AGGREGATES.get(cast(int, aggregate_type.Identifier)) if aggregate_type.NamespaceIndex == 0 else None
        if aggregate is None:
            return _result(StatusCodes.BadAggregateNotSupported)
        start, end = _time(details.StartTime), _time(details.EndTime)
        if start is None or end is None or end < start:
            return _result(
                StatusCodes.BadHistoryOperationUnsupported if start and end else StatusCodes.BadInvalidArgument
            )
        if node.ContinuationPoint:
            try:
                start = datetime.fromisoformat(bytes(node.ContinuationPoint).decode())
            except ValueError:
                return _result(StatusCodes.BadContinuationPointInvalid)
        interval = timedelta(milliseconds=float(details.ProcessingInterval)) if details.ProcessingInterval else None
        if interval is None or interval <= timedelta(0):
            interval = max(end - start, timedelta(microseconds=1))
        page = await self._source.read_aggregates(
            AggregateQuery(target.submodel_id, target.id_short_path, start, end, interval, [aggregate], MAXIMUM_VALUES)
        )
        result = ua.HistoryReadResult()
        result.StatusCode = status(StatusCodes.Good)
        result.HistoryData = ua.HistoryData(
            DataValues=[_aggregate_value(row, aggregate, target.variant_type) for row in page.intervals]
        )
        if page.next_start is not None:
            result.ContinuationPoint = page.next_start.isoformat().encode()
        return result


def _sample_value(
    sample: HistorySample, variant_type: ua.VariantType, timestamps: ua.TimestampsToReturn
) -> ua.DataValue:
    value = data_value(
        sample.value, variant_type, sample.quality, sample.reason, sample.source_time, sample.server_time
    )
    if timestamps in (ua.TimestampsToReturn.Server, ua.TimestampsToReturn.Neither):
        value.SourceTimestamp = None
    if timestamps in (ua.TimestampsToReturn.Source, ua.TimestampsToReturn.Neither):
        value.ServerTimestamp = None
    return value


def _aggregate_value(row: IntervalAggregate, aggregate: Aggregate, variant_type: ua.VariantType) -> ua.DataValue:
    found: Any = row.value_of(aggregate)
    code = StatusCodes.Good
    if aggregate is Aggregate.COUNT:
        variant = ua.Variant(int(found), ua.VariantType.Int32)
    elif found is None:
        variant, code = ua.Variant(None, ua.VariantType.Null), StatusCodes.BadNoData
    elif aggregate is Aggregate.AVG:
        variant = ua.Variant(float(found), ua.VariantType.Double)
    else:
        try:
            variant = to_variant(found, variant_type)
        except (TypeError, ValueError):
            variant, code = ua.Variant(None, ua.VariantType.Null), StatusCodes.BadTypeMismatch
    return ua.DataValue(
        Value=variant,
        StatusCode=status(code),
        SourceTimestamp=cast("ua.DateTime", row.start),
    )
