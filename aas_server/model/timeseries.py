"""IDTA 02008-1-1 *Time Series Data* submodels for the recorded (mapped) Properties of a shell.

One submodel per shell (id ``<shell id>/time-series``, idShort ``TimeSeries``) with

- ``Metadata``: ``Name``, ``Description`` and ``Record``, the record's structure: ``Time``
  (``UtcTime``, xs:dateTime) and one Property per recorded variable, with the variable's
  ``valueType`` and ``semanticId``;
- ``Segments``: one ``LinkedSegment`` per variable whose ``Endpoint`` is the REST history resource of
  the Property (``.../submodel-elements/{idShortPath}/history``) and whose ``Query`` is the
  RFC 6570 template of its query parameters; ``State`` is ``in progress``.

The samples stay in the history store; the submodel only links to them (IDTA 02008 §2, *linked
segment*). Pure: the caller decides the API base URL and adds the submodels to the store.

Left out: ``InternalSegment``/``ExternalSegment`` (no samples are copied into the model) and the
segment properties that change with every sample (``RecordCount``, ``StartTime``, ``EndTime``,
``LastUpdate``, ``Duration``); ``SamplingInterval``/``SamplingRate`` (changes are recorded as they come).
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from basyx.aas import model

from aas_server.model.templates import global_reference

TIME_SERIES_SEMANTIC_ID = "https://admin-shell.io/idta/TimeSeries/1/1"
METADATA_SEMANTIC_ID = "https://admin-shell.io/idta/TimeSeries/Metadata/1/1"
METADATA_NAME_SEMANTIC_ID = "https://admin-shell.io/idta/TimeSeries/Metadata/Name/1/1"
METADATA_DESCRIPTION_SEMANTIC_ID = "https://admin-shell.io/idta/TimeSeries/Metadata/Description/1/1"
RECORD_SEMANTIC_ID = "https://admin-shell.io/idta/TimeSeries/Record/1/1"
UTC_TIME_SEMANTIC_ID = "https://admin-shell.io/idta/TimeSeries/UtcTime/1/1"
SEGMENTS_SEMANTIC_ID = "https://admin-shell.io/idta/TimeSeries/Segments/1/1"
LINKED_SEGMENT_SEMANTIC_ID = "https://admin-shell.io/idta/TimeSeries/Segments/LinkedSegment/1/1"
SEGMENT_NAME_SEMANTIC_ID = "https://admin-shell.io/idta/TimeSeries/Segment/Name/1/1"
SEGMENT_DESCRIPTION_SEMANTIC_ID = "https://admin-shell.io/idta/TimeSeries/Segment/Description/1/1"
SEGMENT_STATE_SEMANTIC_ID = "https://admin-shell.io/idta/TimeSeries/Segment/State/1/1"
ENDPOINT_SEMANTIC_ID = "https://admin-shell.io/idta/TimeSeries/Endpoint/1/1"
QUERY_SEMANTIC_ID = "https://admin-shell.io/idta/TimeSeries/Query/1/1"

STATE_IN_PROGRESS = "in progress"
HISTORY_QUERY_TEMPLATE = "{?from,to,limit,cursor,interval,aggregate}"
"""The ``Query`` of each linked segment: RFC 6570 form-style query expansion; expanded with no
variables it is empty, and the ``Endpoint`` alone returns the whole segment (paged)."""

_ID_SHORT_INVALID = re.compile(r"[^A-Za-z0-9_]+")


@dataclass(frozen=True, slots=True)
class RecordedVariable:
    """A recorded Property: where it is and the element itself (for valueType and semanticId)."""

    submodel_id: str
    id_short_path: str
    element: model.Property


@dataclass(frozen=True, slots=True)
class TimeSeriesPlacement:
    """A Time Series submodel and the shell that refers to it."""

    shell_id: str
    submodel: model.Submodel


def time_series_submodel_id(shell_id: str) -> str:
    return f"{shell_id}/time-series"


def history_path(submodel_id: str, id_short_path: str) -> str:
    """The REST path of an element's history, relative to the API base (``/submodels/.../history``)."""
    encoded = base64.urlsafe_b64encode(submodel_id.encode()).decode("ascii").rstrip("=")
    return f"/submodels/{encoded}/submodel-elements/{urllib.parse.quote(id_short_path, safe='.')}/history"


_ID_SHORT_LENGTH = 128
"""Part 1 ``NameType``: an idShort has at most 128 characters (a path of nested idShorts may have more)."""
_TEXT_LENGTH = 1023
"""Part 1 ``MultiLanguageTextType``: a text has at most 1,023 characters (a submodel id up to 2,000)."""


def _id_short(text: str) -> str:
    candidate = _ID_SHORT_INVALID.sub("_", text).strip("_") or "Value"
    return (candidate if candidate[0].isalpha() else f"V{candidate}")[:_ID_SHORT_LENGTH]


def variable_id_shorts(variables: Sequence[RecordedVariable], submodel_id_shorts: dict[str, str]) -> list[str]:
    """A unique idShort per variable from its path (``Motor.Speed`` → ``Motor_Speed``), prefixed by its
    submodel's idShort where paths repeat across submodels, numbered where that still collides."""
    plain = [_id_short(variable.id_short_path) for variable in variables]
    repeated = {name for name in plain if plain.count(name) > 1}
    taken: set[str] = {"Time"}
    result: list[str] = []
    for variable, name in zip(variables, plain, strict=True):
        if name in repeated:
            name = _id_short(f"{submodel_id_shorts.get(variable.submodel_id, 'Submodel')}_{name}")
        unique, number = name, 2
        while unique in taken:
            suffix = f"_{number}"
            unique, number = name[: _ID_SHORT_LENGTH - len(suffix)] + suffix, number + 1
        taken.add(unique)
        result.append(unique)
    return result


def _text(text: str) -> model.MultiLanguageTextType:
    return model.MultiLanguageTextType({"en": text[:_TEXT_LENGTH]})


def _string(id_short: str, value: str, semantic_id: str) -> model.Property:
    return model.Property(id_short, str, value, semantic_id=global_reference(semantic_id), category="PARAMETER")


def build_time_series(
    shell: model.AssetAdministrationShell,
    variables: Sequence[RecordedVariable],
    api_base: str,
    submodel_id_shorts: dict[str, str] | None = None,
) -> model.Submodel:
    """The Time Series Data submodel of ``shell`` linking the history of ``variables`` under ``api_base``
    (``http://host:port/api/v3.0``)."""
    names = variable_id_shorts(variables, submodel_id_shorts or {})
    shell_name = shell.id_short or shell.id
    record = [
        model.Property(
            "Time", model.datatypes.DateTime, semantic_id=global_reference(UTC_TIME_SEMANTIC_ID), category="VARIABLE"
        )
    ]
    segments: list[model.SubmodelElement] = []
    for variable, name in zip(variables, names, strict=True):
        record.append(
            model.Property(
                name,
                variable.element.value_type,
                semantic_id=variable.element.semantic_id,
                category="VARIABLE",
                description=_text(f"{variable.id_short_path} of submodel {variable.submodel_id}"),
            )
        )
        segments.append(
            model.SubmodelElementCollection(
                name,
                semantic_id=global_reference(LINKED_SEGMENT_SEMANTIC_ID),
                value=[
                    model.MultiLanguageProperty(
                        "Name",
                        _text(variable.id_short_path),
                        semantic_id=global_reference(SEGMENT_NAME_SEMANTIC_ID),
                        category="PARAMETER",
                    ),
                    model.MultiLanguageProperty(
                        "Description",
                        _text(
                            f"Every recorded change of {variable.id_short_path} in submodel {variable.submodel_id}, "
                            "with source time, server time and quality"
                        ),
                        semantic_id=global_reference(SEGMENT_DESCRIPTION_SEMANTIC_ID),
                        category="PARAMETER",
                    ),
                    _string("State", STATE_IN_PROGRESS, SEGMENT_STATE_SEMANTIC_ID),
                    _string(
                        "Endpoint",
                        api_base.rstrip("/") + history_path(variable.submodel_id, variable.id_short_path),
                        ENDPOINT_SEMANTIC_ID,
                    ),
                    _string("Query", HISTORY_QUERY_TEMPLATE, QUERY_SEMANTIC_ID),
                ],
            )
        )
    return model.Submodel(
        time_series_submodel_id(shell.id),
        id_short="TimeSeries",
        semantic_id=global_reference(TIME_SERIES_SEMANTIC_ID),
        description=_text(f"History of the device-fed values of {shell_name}, linked to the hub's history store"),
        submodel_element=[
            model.SubmodelElementCollection(
                "Metadata",
                semantic_id=global_reference(METADATA_SEMANTIC_ID),
                value=[
                    model.MultiLanguageProperty(
                        "Name",
                        _text(f"{shell_name} history"),
                        semantic_id=global_reference(METADATA_NAME_SEMANTIC_ID),
                        category="PARAMETER",
                    ),
                    model.MultiLanguageProperty(
                        "Description",
                        _text(f"Recorded changes of the device-fed values of {shell_name}"),
                        semantic_id=global_reference(METADATA_DESCRIPTION_SEMANTIC_ID),
                        category="PARAMETER",
                    ),
                    model.SubmodelElementCollection(
                        "Record", semantic_id=global_reference(RECORD_SEMANTIC_ID), value=record
                    ),
                ],
            ),
            model.SubmodelElementCollection(
                "Segments", semantic_id=global_reference(SEGMENTS_SEMANTIC_ID), value=segments
            ),
        ],
    )


def plan_time_series(
    shells: Iterable[model.AssetAdministrationShell],
    submodels: Iterable[model.Submodel],
    variables: Iterable[RecordedVariable],
    api_base: str,
) -> list[TimeSeriesPlacement]:
    """A Time Series submodel for each shell with recorded variables: a variable belongs to the first shell
    (in ``shells`` order) referring to its submodel; variables of submodels no shell refers to are left out."""
    shell_list = list(shells)
    submodel_id_shorts = {submodel.id: submodel.id_short or "" for submodel in submodels}
    owner: dict[str, str] = {}
    for shell in shell_list:
        for reference in shell.submodel:
            if reference.key:
                owner.setdefault(reference.key[-1].value, shell.id)
    grouped: dict[str, list[RecordedVariable]] = {}
    for variable in variables:
        shell_id = owner.get(variable.submodel_id)
        if shell_id is not None and variable.submodel_id != time_series_submodel_id(shell_id):
            grouped.setdefault(shell_id, []).append(variable)
    return [
        TimeSeriesPlacement(shell.id, build_time_series(shell, grouped[shell.id], api_base, submodel_id_shorts))
        for shell in shell_list
        if shell.id in grouped
    ]
