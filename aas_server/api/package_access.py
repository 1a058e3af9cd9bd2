"""What a stored AASX package holds, as the access rules see it: every object in the file, not only its shells.

A package file is handed out as uploaded, so a download (*export*), a listing (*read*) or a delete
needs the caller's rights on each shell, each concept description and each element of each
submodel that the file holds (:func:`decide_package`), as the same objects fetched one by one
would. A submodel's elements are judged with the idShort paths and semanticIds they have in the
file, and with the shells that reference the submodel *in the store*: references inside the file
are not followed, so taking a submodel out of a shell also takes it out of the shell's packages.

The file is read with the hub's lenient reader off the event loop, once per package content
(:func:`package_contents`, a cache of the last 1,024 keyed by package id and SHA-256). A file the reader
refuses is judged as the whole repository. Left out: parts of a file the lenient reader sets
aside (see ``docs/exchange.md``) are not judged, as they are not objects.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from basyx.aas import model

from aas_server.config import AccessOperation
from aas_server.errors import HubError
from aas_server.exchange import read_package
from aas_server.model.paths import children_of
from aas_server.security.rules import REPOSITORY, Decision, RuleSet, Target, path_and_ancestors
from aas_server.security.scopes import ModelAccess, semantic_ids_of
from aas_server.store.files import StoredPackage

_CACHE_SIZE = 1024
"""Packages whose contents are kept (a few ids and idShort paths each), so a listing reads each file once."""


@dataclass(frozen=True, slots=True)
class SubmodelContents:
    """A submodel of a package: its id, and each of its elements (``""``: the submodel) with its semanticIds
    and those of its parents."""

    submodel_id: str
    targets: tuple[tuple[str, frozenset[str]], ...]


@dataclass(frozen=True, slots=True)
class PackageContents:
    """The ids of what a package file holds."""

    shells: tuple[str, ...]
    submodels: tuple[SubmodelContents, ...]
    concept_descriptions: tuple[str, ...]

    @classmethod
    def of(cls, identifiables: Iterable[model.Identifiable]) -> PackageContents:
        shells: list[str] = []
        submodels: list[SubmodelContents] = []
        descriptions: list[str] = []
        for identifiable in identifiables:
            if isinstance(identifiable, model.AssetAdministrationShell):
                shells.append(identifiable.id)
            elif isinstance(identifiable, model.Submodel):
                submodels.append(SubmodelContents(identifiable.id, tuple(element_targets(identifiable))))
            else:
                descriptions.append(identifiable.id)
        return cls(tuple(shells), tuple(submodels), tuple(descriptions))


UNREADABLE = PackageContents((), (), ())
"""What a package holds that the hub's reader refuses: nothing known, so it needs the whole repository."""

_contents: OrderedDict[tuple[str, bytes], PackageContents] = OrderedDict()


def _read(package: StoredPackage) -> tuple[bytes, PackageContents]:
    digest = hashlib.sha256(package.content).digest()
    found = _contents.get((package.package_id, digest))
    if found is not None:
        return digest, found
    try:
        result = read_package(package.content, package.file_name)
    except HubError:
        return digest, UNREADABLE
    return digest, PackageContents.of(result.identifiables)


async def package_contents(package: StoredPackage) -> PackageContents:
    """What ``package``'s file holds (``UNREADABLE`` if the hub's reader refuses it), read off the event loop."""
    digest, contents = await asyncio.to_thread(_read, package)
    key = (package.package_id, digest)
    _contents[key] = contents
    _contents.move_to_end(key)
    while len(_contents) > _CACHE_SIZE:
        _contents.popitem(last=False)
    return contents


def decide_package(
    contents: PackageContents, roles: frozenset[str], operation: AccessOperation, access: ModelAccess
) -> Decision:
    """Whether ``roles`` may do ``operation`` on every object of a package; an unreadable or empty package
    needs the whole repository."""
    policy = access.policy
    if not (contents.shells or contents.submodels or contents.concept_descriptions):
        return policy.decide(roles, operation, REPOSITORY)
    rules = policy.rules_for(roles, operation)
    if rules.unrestricted:
        return Decision(True, "allowed for every target")
    for shell_id in contents.shells:
        decision = rules.decide(access.shell_target(shell_id))
        if not decision.allowed:
            return Decision(False, f"shell {shell_id!r} in the package: {decision.reason}")
    for identifier in contents.concept_descriptions:
        decision = rules.decide(access.concept_description_target(identifier))
        if not decision.allowed:
            return Decision(False, f"concept description {identifier!r} in the package: {decision.reason}")
    for submodel in contents.submodels:
        refused = first_refused(rules, access.shells_of(submodel.submodel_id), submodel.submodel_id, submodel.targets)
        if refused is not None:
            id_short_path, decision = refused
            where = f"element {id_short_path!r} of submodel" if id_short_path else "submodel"
            return Decision(False, f"{where} {submodel.submodel_id!r} in the package: {decision.reason}")
    return Decision(True, "allowed for every object of the package")


def first_refused(
    rules: RuleSet, shells: frozenset[str], submodel_id: str, targets: Iterable[tuple[str, frozenset[str]]]
) -> tuple[str, Decision] | None:
    """The first of a submodel's ``targets`` (idShort path, ``""`` for the submodel, and semanticIds) that
    ``rules`` refuse, with the refusal; ``None`` when they allow every one."""
    for id_short_path, semantic_ids in targets:
        target = Target(
            shells=shells,
            submodels=frozenset({submodel_id}),
            paths=path_and_ancestors(id_short_path),
            semantic_ids=semantic_ids,
        )
        decision = rules.decide(target)
        if not decision.allowed:
            return id_short_path, decision
    return None


def element_targets(submodel: model.Submodel) -> Iterator[tuple[str, frozenset[str]]]:
    """The submodel (path ``""``) and each element below it, with the semanticIds of it and its parents."""
    root = semantic_ids_of(submodel)
    yield "", root
    stack: list[tuple[model.Referable, str, frozenset[str]]] = [(submodel, "", root)]
    while stack:
        parent, parent_path, inherited = stack.pop()
        for index, child in enumerate(children_of(parent) or ()):
            if isinstance(parent, model.SubmodelElementList):
                path = f"{parent_path}[{index}]"
            else:
                path = f"{parent_path}.{child.id_short}" if parent_path else str(child.id_short)
            semantic = inherited | semantic_ids_of(child)
            yield path, semantic
            stack.append((child, path, semantic))
