"""Outbound change events: their MQTT topics and payloads, and the durable outbox they wait in.

Pure: ``OutboxEncoder`` turns a store change into an ``OutboundEvent`` (topic and JSON payload);
the ``Outbox`` protocol is what persistence offers to keep events until the broker acknowledged
them; ``OutboxOverflow`` counts and reports events dropped because the outbox is full. The
store encodes the events of client writes and model changes *before* it journals them, so the
journal writes value or model and event in one transaction (see ``docs/events.md``).

Topics follow the hierarchical scheme of Eclipse BaSyx (Java server SDK, *MQTT eventing*), with
identifiers base64url-encoded without padding as in Part 2 paths (IDTA-01002, 12.2)::

    aas-repository/{repoId}/shells/created
    aas-repository/{repoId}/shells/{shellId}/updated | deleted
    sm-repository/{repoId}/submodels/created
    sm-repository/{repoId}/submodels/{submodelId}/updated | deleted
    sm-repository/{repoId}/submodels/{submodelId}/submodelElements/{idShortPath}/created | updated | deleted
    sm-repository/{repoId}/submodels/{submodelId}/submodelElements/{idShortPath}/value/updated
    cd-repository/{repoId}/conceptDescriptions/created
    cd-repository/{repoId}/conceptDescriptions/{cdId}/updated | deleted

Payloads: the AAS JSON of the object (IDTA-01001 Part 1, 5.3 JSON serialisation; for ``deleted``
the object as it was last), and for value changes a JSON object with the ValueOnly value
(IDTA-01002 Part 2, 11.4.3), both timestamps, quality, its reason, the origin and the outbox
``sequence``. Every message also carries the sequence as the MQTT 5 user property ``sequence``.

Left out: BaSyx's ``patched``, ``fileValue`` and submodel-reference topics, and events for
AssetInformation changes on their own (a shell's ``updated`` covers them).
"""

from __future__ import annotations

import base64
import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import orjson
from basyx.aas import model

from aas_server.exchange.roundtrip import JsonEncoder
from aas_server.model import values
from aas_server.model.events import ValueChanged

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aas_server.store.twin_store import ModelChangeKind

_LOG = logging.getLogger(__name__)

SEQUENCE_PROPERTY = "sequence"
"""Name of the MQTT 5 user property that carries an event's outbox sequence."""


@dataclass(frozen=True, slots=True)
class OutboundEvent:
    """One message to publish, before the outbox gives it its sequence."""

    topic: str
    payload: bytes
    """UTF-8 JSON."""
    sequenced: bool = False
    """The payload is a JSON object that receives ``"sequence": n`` when it is published (value events)."""


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event in the outbox: its sequence (ascending, never reused) and the message as it is published."""

    sequence: int
    topic: str
    payload: bytes


def pending_event(sequence: int, topic: str, payload: bytes, sequenced: bool) -> PendingEvent:
    """The message of a stored event: a sequenced payload gets its ``sequence`` member added."""
    if sequenced:
        payload = payload[:-1] + b',"sequence":' + str(sequence).encode("ascii") + b"}"
    return PendingEvent(sequence, topic, payload)


class Outbox(Protocol):
    """Durable storage of outbound events until the broker acknowledged them (``persistence`` implements it).

    Events are kept in the order they were appended and numbered by an ascending sequence that
    is never reused. When the outbox holds its limit, further events are dropped and counted.
    """

    @property
    def outbox_size(self) -> int:
        """Events stored and not yet removed."""
        ...

    @property
    def outbox_dropped(self) -> int:
        """Events dropped since start because the outbox was full."""
        ...

    async def outbox_append(self, events: Sequence[OutboundEvent]) -> None:
        """Store ``events`` in one durable transaction (those beyond the limit are dropped)."""
        ...

    async def outbox_read(self, after: int, limit: int) -> list[PendingEvent]:
        """Up to ``limit`` events with a sequence above ``after``, in sequence order."""
        ...

    async def outbox_remove(self, sequences: Sequence[int]) -> None:
        """Remove delivered events."""
        ...


class OutboxOverflow:
    """Counts events dropped because the outbox is full; logs an error at most once per ``interval`` seconds.

    Each error line says how many events were dropped since the previous one and in total; when
    events are accepted again after an overflow, that is logged once.
    """

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.dropped = 0
        self._unreported = 0
        self._last_report: float | None = None
        self._overflowing = False

    def drop(self, count: int, limit: int) -> None:
        """``count`` events did not fit into an outbox of ``limit`` events."""
        if count <= 0:
            return
        self.dropped += count
        self._unreported += count
        self._overflowing = True
        now = time.monotonic()
        if self._last_report is not None and now - self._last_report < self.interval:
            return
        _LOG.error(
            "event outbox is full (%d events): %d new events dropped (%d in total); "
            "is the MQTT broker reachable? raise events.outbox_limit to keep more",
            limit,
            self._unreported,
            self.dropped,
        )
        self._last_report = now
        self._unreported = 0

    def accepted(self) -> None:
        """Events were stored again."""
        if self._overflowing:
            self._overflowing = False
            _LOG.info("event outbox accepts events again (%d dropped in total)", self.dropped)


def encode_identifier(identifier: str) -> str:
    """UTF-8 base64url without padding (IDTA-01002 Part 2, 12.2), as in REST paths."""
    return base64.urlsafe_b64encode(identifier.encode()).decode("ascii").rstrip("=")


_ENCODER = JsonEncoder()


def aas_json(obj: model.Referable) -> bytes:
    """The AAS JSON of an identifiable or submodel element (IDTA-01001 Part 1, 5.3)."""
    return orjson.dumps(obj, default=_ENCODER.default)


@functools.lru_cache(maxsize=65_536)
def _element_prefix(repository_id: str, submodel_id: str, id_short_path: str) -> str:
    return f"sm-repository/{repository_id}/submodels/{encode_identifier(submodel_id)}/submodelElements/{id_short_path}"


class OutboxEncoder:
    """Topics and payloads of the change events of one repository (``repository_id`` is the topics' ``{repoId}``)."""

    def __init__(self, repository_id: str, *, value_events: bool = True) -> None:
        self.repository_id = repository_id
        self.value_events = value_events

    def _collection(self, identifiable: model.Identifiable) -> str:
        repository = self.repository_id
        if isinstance(identifiable, model.AssetAdministrationShell):
            return f"aas-repository/{repository}/shells"
        if isinstance(identifiable, model.Submodel):
            return f"sm-repository/{repository}/submodels"
        if isinstance(identifiable, model.ConceptDescription):
            return f"cd-repository/{repository}/conceptDescriptions"
        raise TypeError(f"no events for a {type(identifiable).__name__}")

    def identifiable_topic(self, kind: ModelChangeKind, identifiable: model.Identifiable) -> str:
        collection = self._collection(identifiable)
        if kind.value == "created":
            return f"{collection}/created"
        return f"{collection}/{encode_identifier(identifiable.id)}/{kind.value}"

    def element_topic(self, kind: ModelChangeKind, submodel_id: str, id_short_path: str) -> str:
        return f"{_element_prefix(self.repository_id, submodel_id, id_short_path)}/{kind.value}"

    def value_topic(self, submodel_id: str, id_short_path: str) -> str:
        return f"{_element_prefix(self.repository_id, submodel_id, id_short_path)}/value/updated"

    def identifiable_event(self, kind: ModelChangeKind, identifiable: model.Identifiable) -> OutboundEvent:
        """A shell, submodel or concept description was created, updated or deleted (payload: its AAS JSON)."""
        return OutboundEvent(self.identifiable_topic(kind, identifiable), aas_json(identifiable))

    def element_event(
        self, kind: ModelChangeKind, submodel_id: str, id_short_path: str, element: model.SubmodelElement
    ) -> OutboundEvent:
        """A submodel element was created, updated or deleted (payload: its AAS JSON)."""
        return OutboundEvent(self.element_topic(kind, submodel_id, id_short_path), aas_json(element))

    def value_event(self, change: ValueChanged) -> OutboundEvent | None:
        """A Property's value, timestamps or quality changed; ``None`` when value events are off."""
        if not self.value_events:
            return None
        payload = orjson.dumps(
            {
                "value": values.to_json_value(change.value),
                "sourceTimestamp": change.source_time,
                "serverTimestamp": change.server_time,
                "quality": change.quality.value,
                "qualityReason": change.reason.value,
                "origin": change.origin,
            }
        )
        return OutboundEvent(self.value_topic(change.submodel_id, change.id_short_path), payload, sequenced=True)
