"""idShort paths (AAS Part 2, *idShortPath*): parse, format, resolve and walk.

A path is a dot-separated sequence of idShorts, with ``[n]`` indexes into a
``SubmodelElementList``: ``Motor.Bearings[1].Temperature``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from basyx.aas import model

from aas_server.errors import InvalidRequestError, NotFoundError

Segment = str | int

_ID_SHORT = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_INDEX = re.compile(r"[0-9]+")
_MAX_PATH_LENGTH = 4096


def parse_id_short_path(path: str) -> tuple[Segment, ...]:
    """Split an idShort path into idShorts (``str``) and list indexes (``int``).

    Raises ``InvalidRequestError`` naming the offending position for a malformed path.
    """
    if not path or len(path) > _MAX_PATH_LENGTH:
        raise InvalidRequestError(f"idShort path must have 1..{_MAX_PATH_LENGTH} characters")
    segments: list[Segment] = []
    position = 0
    length = len(path)
    while position < length:
        if path[position] == "[":
            end = path.find("]", position)
            if end == -1 or not _INDEX.fullmatch(path, position + 1, end):
                raise InvalidRequestError(f"idShort path {path!r}: bad list index at position {position}")
            segments.append(int(path[position + 1 : end]))
            position = end + 1
        else:
            if position > 0:
                if path[position] != ".":
                    raise InvalidRequestError(f"idShort path {path!r}: expected '.' at position {position}")
                position += 1
            match = _ID_SHORT.match(path, position)
            if match is None:
                raise InvalidRequestError(f"idShort path {path!r}: bad idShort at position {position}")
            segments.append(match.group())
            position = match.end()
    return tuple(segments)


def format_id_short_path(segments: tuple[Segment, ...]) -> str:
    """Join segments back into an idShort path."""
    parts: list[str] = []
    for segment in segments:
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        else:
            parts.append(f".{segment}" if parts else segment)
    return "".join(parts)


def children_of(element: object) -> model.NamespaceSet[Any] | None:
    """The set of direct child elements of a submodel or element; ``None`` for an element that has none."""
    if isinstance(element, model.Submodel):
        return element.submodel_element
    if isinstance(element, model.SubmodelElementCollection | model.SubmodelElementList):
        return element.value
    if isinstance(element, model.Entity):
        return element.statement
    if isinstance(element, model.AnnotatedRelationshipElement):
        return element.annotation
    return None


def resolve(submodel: model.Submodel, path: str) -> model.SubmodelElement:
    """Find the element at ``path`` in ``submodel`` or raise ``NotFoundError``."""
    current: object = submodel
    for segment in parse_id_short_path(path):
        if isinstance(segment, int):
            if not isinstance(current, model.SubmodelElementList):
                raise NotFoundError(f"{path!r}: index [{segment}] applied to a non-list element")
            items = list(current.value)
            if segment >= len(items):
                raise NotFoundError(f"{path!r}: list index [{segment}] out of range")
            current = items[segment]
        else:
            children = children_of(current)
            if not isinstance(children, model.NamespaceSet) or isinstance(current, model.SubmodelElementList):
                raise NotFoundError(f"{path!r}: {segment!r} not found")
            try:
                current = children.get_object_by_attribute("id_short", segment)
            except KeyError:
                raise NotFoundError(f"submodel element {path!r} not found in {submodel.id!r}") from None
    if not isinstance(current, model.SubmodelElement):
        raise NotFoundError(f"{path!r} does not name a submodel element")
    return current


def walk(
    parent: model.Submodel | model.SubmodelElement, prefix: str = ""
) -> Iterator[tuple[str, model.SubmodelElement]]:
    """Yield ``(id_short_path, element)`` for every element below ``parent``, depth first."""
    children = children_of(parent)
    if children is None:
        return
    is_list = isinstance(parent, model.SubmodelElementList)
    for index, child in enumerate(children):
        if is_list:
            path = f"{prefix}[{index}]"
        else:
            path = f"{prefix}.{child.id_short}" if prefix else str(child.id_short)
        yield path, child
        yield from walk(child, path)


def has_more_than(parent: model.Submodel | model.SubmodelElement, count: int) -> bool:
    """Whether more than ``count`` elements are below ``parent`` (looks at no more than ``count + 1`` of them)."""
    seen = 0
    stack: list[object] = [parent]
    while stack:
        children = children_of(stack.pop())
        if children is None:
            continue
        for child in children:
            seen += 1
            if seen > count:
                return True
            stack.append(child)
    return False


def path_of(element: model.SubmodelElement) -> str:
    """The idShort path of ``element`` relative to its submodel."""
    segments: list[Segment] = []
    current: object = element
    while isinstance(current, model.SubmodelElement):
        parent = current.parent
        if isinstance(parent, model.SubmodelElementList):
            segments.append(list(parent.value).index(current))
        else:
            segments.append(str(current.id_short))
        current = parent
    return format_id_short_path(tuple(reversed(segments)))
