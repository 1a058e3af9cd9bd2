"""Rule targets of the objects in a twin store, and what part of a submodel a caller may see or change.

:class:`ModelAccess` builds a :class:`~aas_server.security.rules.Target` for a shell, a submodel, an
element (existing or not) or a concept description, and decides a whole subtree at once:
:meth:`ModelAccess.scope` answers ``ALL`` (every element below is allowed), ``NONE`` or ``PARTIAL``
with the idShort paths to keep. A partially readable submodel or element is served as a pruned copy
(:meth:`ModelAccess.pruned_submodel`):

- an element is kept when it is allowed or holds a kept element; a container kept only for what it
  holds is shown with its own attributes and its kept children;
- a SubmodelElementList is kept only when all its items are (removing an item would renumber the
  others);
- a rule on paths or semantic ids covers the elements below the ones it names.

Scopes are cached per roles, operation, subtree and content version of the submodel.
"""

from __future__ import annotations

import copy
import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from basyx.aas import model

from aas_server.config import AccessOperation
from aas_server.errors import NotFoundError
from aas_server.model import paths
from aas_server.security.rules import AccessPolicy, CompiledRule, Match, RuleSet, Target, path_and_ancestors
from aas_server.store.twin_store import TwinStore

_SCOPE_CACHE_LIMIT = 4096


class ScopeKind(enum.Enum):
    ALL = "all"
    NONE = "none"
    PARTIAL = "partial"


@dataclass(frozen=True, slots=True)
class Scope:
    """What of a subtree is allowed; ``kept`` (for ``PARTIAL``) lists the idShort paths to keep."""

    kind: ScopeKind
    reason: str
    kept: frozenset[str] = frozenset()

    def keeps(self, id_short_path: str) -> bool:
        return self.kind is ScopeKind.ALL or id_short_path in self.kept


def semantic_ids_of(referable: model.HasSemantics) -> frozenset[str]:
    """The key values of a referable's semanticId."""
    reference = referable.semantic_id
    return frozenset(key.value for key in reference.key) if reference is not None else frozenset()


def _child_path(parent: object, parent_path: str, index: int, child: model.SubmodelElement) -> str:
    if isinstance(parent, model.SubmodelElementList):
        return f"{parent_path}[{index}]"
    return f"{parent_path}.{child.id_short}" if parent_path else str(child.id_short)


class ModelAccess:
    """Targets and subtree scopes over one store for one policy."""

    def __init__(self, store: TwinStore, policy: AccessPolicy) -> None:
        self.store = store
        self.policy = policy
        self._references_version = -1
        self._shells_of: dict[str, frozenset[str]] = {}
        self._scopes: OrderedDict[tuple[object, ...], Scope] = OrderedDict()

    # --- targets ---------------------------------------------------------------------------------

    def shells_of(self, submodel_id: str) -> frozenset[str]:
        """The shells referencing ``submodel_id`` (an index rebuilt when the store's structure changed)."""
        if self._references_version != self.store.version:
            found: dict[str, set[str]] = {}
            for shell in self.store.shells():
                for reference in shell.submodel:
                    if reference.key:
                        found.setdefault(reference.key[0].value, set()).add(shell.id)
            self._shells_of = {key: frozenset(value) for key, value in found.items()}
            self._references_version = self.store.version
        return self._shells_of.get(submodel_id, frozenset())

    @staticmethod
    def shell_target(shell_id: str) -> Target:
        return Target(shells=frozenset({shell_id}))

    @staticmethod
    def concept_description_target(identifier: str) -> Target:
        return Target(concept_descriptions=frozenset({identifier}))

    def element_target(self, submodel_id: str, id_short_path: str = "") -> Target:
        """The target of the submodel (``""``) or of the element at ``id_short_path``, which need not exist.

        Semantic ids are collected from the submodel down the path as far as it exists.
        """
        semantic: set[str] = set()
        current: model.Submodel | model.SubmodelElement | None
        try:
            current = self.store.submodel(submodel_id)
        except NotFoundError:
            current = None
        segments = paths.parse_id_short_path(id_short_path) if id_short_path else ()
        if current is not None:
            semantic.update(semantic_ids_of(current))
            for segment in segments:
                current = _step(current, segment)
                if current is None:
                    break
                semantic.update(semantic_ids_of(current))
        return Target(
            shells=self.shells_of(submodel_id),
            submodels=frozenset({submodel_id}),
            paths=path_and_ancestors(id_short_path),
            semantic_ids=frozenset(semantic),
        )

    # --- scopes ----------------------------------------------------------------------------------

    def scope(
        self, roles: frozenset[str], operation: AccessOperation, submodel_id: str, id_short_path: str = ""
    ) -> Scope:
        """What of the submodel (``""``) or of the element at ``id_short_path`` and below ``roles`` may do."""
        rules = self.policy.rules_for(roles, operation)
        if rules.unrestricted:
            return Scope(ScopeKind.ALL, "allowed for every target")
        try:
            submodel = self.store.submodel(submodel_id)
            root: model.Submodel | model.SubmodelElement = (
                paths.resolve(submodel, id_short_path) if id_short_path else submodel
            )
        except NotFoundError:
            decision = rules.decide(self.element_target(submodel_id, id_short_path))
            return Scope(ScopeKind.ALL if decision.allowed else ScopeKind.NONE, decision.reason)
        key = (
            roles,
            operation,
            submodel_id,
            id_short_path,
            self.store.content_version(submodel_id),
            self.store.version,
        )
        found = self._scopes.get(key)
        if found is not None:
            self._scopes.move_to_end(key)
            return found
        found = self._compute(rules, self.element_target(submodel_id, id_short_path), id_short_path, root)
        self._scopes[key] = found
        if len(self._scopes) > _SCOPE_CACHE_LIMIT:
            self._scopes.popitem(last=False)
        return found

    def scope_if_referenced_by(
        self, roles: frozenset[str], operation: AccessOperation, submodel_id: str, shells: frozenset[str]
    ) -> Scope:
        """What of the whole submodel ``roles`` could do if exactly ``shells`` referenced it (not cached)."""
        rules = self.policy.rules_for(roles, operation)
        if rules.unrestricted:
            return Scope(ScopeKind.ALL, "allowed for every target")
        base = replace(self.element_target(submodel_id), shells=shells)
        try:
            root = self.store.submodel(submodel_id)
        except NotFoundError:
            decision = rules.decide(base)
            return Scope(ScopeKind.ALL if decision.allowed else ScopeKind.NONE, decision.reason)
        return self._compute(rules, base, "", root)

    def gained_by_references(
        self, roles: frozenset[str], submodel_id: str, before: frozenset[str], after: frozenset[str]
    ) -> list[AccessOperation]:
        """The operations ``roles`` could do on more of the submodel if the shells referencing it went from
        ``before`` to ``after`` (a reference added, or one removed that a deny rule scoped by shell followed)."""
        if before == after:
            return []
        gained: list[AccessOperation] = []
        for operation, _ in self._partly_allowed(roles, lambda rule: rule.shells.restricts):
            now = self.scope_if_referenced_by(roles, operation, submodel_id, before)
            then = self.scope_if_referenced_by(roles, operation, submodel_id, after)
            if not _covers(now, then):
                gained.append(operation)
        return gained

    def gained_by_replacement(
        self,
        roles: frozenset[str],
        submodel_id: str,
        id_short_path: str,
        replacement: model.Submodel | model.SubmodelElement,
    ) -> list[AccessOperation]:
        """The operations ``roles`` could do on more of what exists now if the submodel (``""``) or the element at
        ``id_short_path`` were replaced by ``replacement`` (say, with another semanticId that a rule follows).

        Compares the elements at the idShort paths found both now and in ``replacement``.
        """
        try:
            submodel = self.store.submodel(submodel_id)
            current: model.Submodel | model.SubmodelElement = (
                paths.resolve(submodel, id_short_path) if id_short_path else submodel
            )
        except NotFoundError:
            return []
        old_paths = {id_short_path, *(path for path, _ in paths.walk(current, id_short_path))}
        new_paths = {id_short_path, *(path for path, _ in paths.walk(replacement, id_short_path))}
        common = old_paths & new_paths
        inherited: frozenset[str] = frozenset()
        if id_short_path:
            parent = paths.format_id_short_path(paths.parse_id_short_path(id_short_path)[:-1])
            inherited = self.element_target(submodel_id, parent).semantic_ids or frozenset()
        base = replace(
            self.element_target(submodel_id, id_short_path),
            semantic_ids=inherited | semantic_ids_of(replacement),
        )
        gained: list[AccessOperation] = []
        for operation, rules in self._partly_allowed(roles, lambda rule: rule.semantic_ids.restricts):
            before = _allowed_paths(self.scope(roles, operation, submodel_id, id_short_path), old_paths)
            after = _allowed_paths(self._compute(rules, base, id_short_path, replacement), new_paths)
            if (after & common) - before:
                gained.append(operation)
        return gained

    def _partly_allowed(
        self, roles: frozenset[str], restricts: Callable[[CompiledRule], bool]
    ) -> Iterator[tuple[AccessOperation, RuleSet]]:
        """Each operation ``roles`` may do on some things but not all, with its rules, where a rule
        ``restricts`` (is scoped by the dimension a change touches)."""
        for operation in AccessOperation:
            rules = self.policy.rules_for(roles, operation)
            if not rules.allow or rules.unrestricted:
                continue
            if any(restricts(rule) for rule in (*rules.allow, *rules.deny)):
                yield operation, rules

    def _compute(
        self, rules: RuleSet, base: Target, id_short_path: str, root: model.Submodel | model.SubmodelElement
    ) -> Scope:
        decision = rules.decide(base)
        if any(rule.match(base) is Match.YES for rule in rules.deny):
            return Scope(ScopeKind.NONE, decision.reason)
        varying_allow = _varying(rules.allow, base)
        varying_deny = _varying(rules.deny, base)
        if not varying_allow and not varying_deny:
            return Scope(ScopeKind.ALL if decision.allowed else ScopeKind.NONE, decision.reason)
        walker = _Walker(base, decision.allowed, varying_allow, varying_deny)
        children = paths.children_of(root)
        all_allowed = decision.allowed
        if children is not None:
            for index, child in enumerate(children):
                _, allowed = walker.visit(
                    child, _child_path(root, id_short_path, index, child), base.semantic_ids or frozenset()
                )
                all_allowed = all_allowed and allowed
            if isinstance(root, model.SubmodelElementList) and not all(
                _child_path(root, id_short_path, index, child) in walker.kept for index, child in enumerate(children)
            ):
                walker.drop_below(id_short_path)
        if all_allowed:
            return Scope(ScopeKind.ALL, decision.reason)
        if not decision.allowed and not walker.kept:
            return Scope(ScopeKind.NONE, decision.reason)
        return Scope(ScopeKind.PARTIAL, "partly allowed", frozenset(walker.kept))

    def pruned_submodel(self, submodel_id: str, scope: Scope, id_short_path: str = "") -> model.Submodel:
        """A copy of the submodel without the elements below ``id_short_path`` that ``scope`` does not keep."""
        pruned = copy.deepcopy(self.store.submodel(submodel_id))
        root: model.Submodel | model.SubmodelElement = paths.resolve(pruned, id_short_path) if id_short_path else pruned
        _prune(root, id_short_path, scope)
        return pruned


def _allowed_paths(scope: Scope, every: set[str]) -> set[str]:
    """The idShort paths of ``every`` (a subtree's) that ``scope`` allows or keeps."""
    if scope.kind is ScopeKind.ALL:
        return every
    if scope.kind is ScopeKind.NONE:
        return set()
    return every & scope.kept


def _covers(wider: Scope, narrower: Scope) -> bool:
    """Whether ``wider`` allows at least what ``narrower`` does."""
    if wider.kind is ScopeKind.ALL or narrower.kind is ScopeKind.NONE:
        return True
    if narrower.kind is ScopeKind.ALL or wider.kind is ScopeKind.NONE:
        return False
    return narrower.kept <= wider.kept


def _step(current: model.Submodel | model.SubmodelElement, segment: paths.Segment) -> model.SubmodelElement | None:
    """The child of ``current`` named by one path segment, or ``None``."""
    if isinstance(segment, int):
        if isinstance(current, model.SubmodelElementList) and segment < len(current.value):
            item: model.SubmodelElement = list(current.value)[segment]
            return item
        return None
    children = paths.children_of(current)
    if children is None or isinstance(current, model.SubmodelElementList):
        return None
    try:
        child: model.SubmodelElement = children.get_object_by_attribute("id_short", segment)
    except KeyError:
        return None
    return child


def _varying(rules: Iterable[CompiledRule], base: Target) -> tuple[CompiledRule, ...]:
    """Rules that do not match the subtree's root only for its path or semantic id: they may match below."""
    return tuple(
        rule
        for rule in rules
        if rule.varies_inside_submodels and rule.match_outer(base) is Match.YES and rule.match_inner(base) is Match.NO
    )


class _Walker:
    """Decides every element below a subtree's root against the rules that vary inside it."""

    def __init__(
        self,
        base: Target,
        root_allowed: bool,
        varying_allow: tuple[CompiledRule, ...],
        varying_deny: tuple[CompiledRule, ...],
    ) -> None:
        self.base = base
        self.root_allowed = root_allowed
        self.varying_allow = varying_allow
        self.varying_deny = varying_deny
        self.kept: set[str] = set()

    def visit(self, element: model.SubmodelElement, path: str, inherited: frozenset[str]) -> tuple[bool, bool]:
        """Decide ``element`` and what it holds; return whether it is kept and whether all of it is allowed."""
        semantic = inherited | semantic_ids_of(element)
        target = Target(
            shells=self.base.shells,
            submodels=self.base.submodels,
            concept_descriptions=self.base.concept_descriptions,
            paths=path_and_ancestors(path),
            semantic_ids=semantic,
        )
        allowed = (
            self.root_allowed or any(rule.match(target) is Match.YES for rule in self.varying_allow)
        ) and not any(rule.match(target) is Match.YES for rule in self.varying_deny)
        all_allowed = allowed
        holds_kept = False
        children = paths.children_of(element)
        if children is not None:
            child_paths = []
            for index, child in enumerate(children):
                child_path = _child_path(element, path, index, child)
                child_paths.append(child_path)
                child_kept, child_allowed = self.visit(child, child_path, semantic)
                holds_kept = holds_kept or child_kept
                all_allowed = all_allowed and child_allowed
            if isinstance(element, model.SubmodelElementList) and not all(p in self.kept for p in child_paths):
                self.drop_below(path)
                return False, all_allowed
        kept = allowed or holds_kept
        if kept:
            self.kept.add(path)
        return kept, all_allowed

    def drop_below(self, path: str) -> None:
        """Forget what was kept below ``path`` (a list that cannot be shown item by item)."""
        below = (path + ".", path + "[")
        self.kept = {kept for kept in self.kept if not kept.startswith(below)}


def _prune(element: model.Submodel | model.SubmodelElement, path: str, scope: Scope) -> None:
    children = paths.children_of(element)
    if children is None or scope.kind is ScopeKind.ALL:
        return
    removed: list[model.SubmodelElement] = []
    for index, child in enumerate(list(children)):
        child_path = _child_path(element, path, index, child)
        if child_path in scope.kept:
            _prune(child, child_path, scope)
        else:
            removed.append(child)
    for child in removed:
        children.remove(child)
