"""Access rules: roles x operations x targets -> allow or deny, deny by default (in the spirit of IDTA-01004 Part 4).

A request is allowed when some *allow* rule matches it and no *deny* rule does. A rule matches when
it names one of the caller's roles and the request's operation, and every target list it gives
matches the request's :class:`Target`:

- ``shells``, ``submodels``, ``concept_descriptions``: globs on ids; a submodel and its elements
  belong to every shell that references the submodel;
- ``paths``: globs on idShort paths; a pattern also covers the elements below what it matches
  (``Status`` covers ``Status.Temperature``); the submodel itself has the path ``""`` (only an
  all-``*`` pattern covers it);
- ``semantic_ids``: globs on the semanticId key values of the element, of its parents and of its
  submodel.

A target dimension is *known* (a set of values, maybe empty: a shell has no idShort path) or
*unknown* (``None``: a request on the whole repository, or creating an object whose id is in the
body). An allow rule needs a definite match; a deny rule that *might* match denies.

Globs know ``*`` (any text, also empty) and ``?`` (one character); every other character, ``[`` and
``]`` included, stands for itself. Matching is O(pattern x text) without backtracking blow-ups.

Left out of Part 4: attribute-based conditions (time, client address, claims other than roles),
formulas, and rule objects inside the model; rules come from the settings file only.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aas_server.config import AccessOperation, AccessRule

ANY_ROLE = "*"
"""A rule role that every caller with a role has."""

MAX_PATTERN_LENGTH = 1024
"""Longest glob accepted (``check`` reports longer ones)."""


def glob_matches(pattern: str, text: str) -> bool:
    """Whether ``text`` matches ``pattern`` (``*`` any text, ``?`` one character, all else literal)."""
    pattern_index = text_index = 0
    star = -1
    resume = 0
    pattern_length, text_length = len(pattern), len(text)
    while text_index < text_length:
        if pattern_index < pattern_length and pattern[pattern_index] in ("?", text[text_index]):
            pattern_index += 1
            text_index += 1
        elif pattern_index < pattern_length and pattern[pattern_index] == "*":
            star = pattern_index
            resume = text_index
            pattern_index += 1
        elif star >= 0:
            pattern_index = star + 1
            resume += 1
            text_index = resume
        else:
            return False
    while pattern_index < pattern_length and pattern[pattern_index] == "*":
        pattern_index += 1
    return pattern_index == pattern_length


def path_and_ancestors(id_short_path: str) -> frozenset[str]:
    """``A.B[0].C`` -> ``{A, A.B, A.B[0], A.B[0].C}``; ``""`` (the submodel itself) -> ``{""}``."""
    if not id_short_path:
        return frozenset({""})
    prefixes = {id_short_path}
    for index, character in enumerate(id_short_path):
        if character in ".[" and index > 0:
            prefixes.add(id_short_path[:index])
    return frozenset(prefixes)


class Match(enum.Enum):
    """How a rule relates to a target."""

    YES = "yes"
    MAYBE = "maybe"
    """Some dimension of the target is unknown."""
    NO = "no"


@dataclass(frozen=True, slots=True)
class Patterns:
    """A compiled target list: exact values apart, globs tried one by one."""

    exact: frozenset[str]
    globs: tuple[str, ...]

    @classmethod
    def of(cls, patterns: Iterable[str]) -> Patterns:
        listed = list(patterns)
        return cls(
            frozenset(p for p in listed if "*" not in p and "?" not in p),
            tuple(p for p in listed if "*" in p or "?" in p),
        )

    @property
    def restricts(self) -> bool:
        return bool(self.exact or self.globs)

    def match(self, values: frozenset[str] | None) -> Match:
        if not self.restricts:
            return Match.YES
        if values is None:
            return Match.MAYBE
        if not self.exact.isdisjoint(values):
            return Match.YES
        if any(glob_matches(glob, value) for glob in self.globs for value in values):
            return Match.YES
        return Match.NO


@dataclass(frozen=True, slots=True)
class Target:
    """What a request acts on, as rules see it. ``None`` in a dimension: unknown."""

    shells: frozenset[str] | None = frozenset()
    submodels: frozenset[str] | None = frozenset()
    concept_descriptions: frozenset[str] | None = frozenset()
    paths: frozenset[str] | None = frozenset()
    """The element's idShort path and those of its parents (``path_and_ancestors``)."""
    semantic_ids: frozenset[str] | None = frozenset()


REPOSITORY = Target(None, None, None, None, None)
"""The whole repository, or a new object not known before the handler reads the body."""


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """An ``AccessRule`` ready for matching; ``index`` is its position in ``security.rules``."""

    index: int
    allow: bool
    roles: frozenset[str]
    operations: frozenset[AccessOperation]
    shells: Patterns
    submodels: Patterns
    concept_descriptions: Patterns
    paths: Patterns
    semantic_ids: Patterns

    @classmethod
    def of(cls, index: int, rule: AccessRule) -> CompiledRule:
        return cls(
            index,
            rule.effect == "allow",
            frozenset(rule.roles),
            frozenset(rule.operations),
            Patterns.of(rule.shells),
            Patterns.of(rule.submodels),
            Patterns.of(rule.concept_descriptions),
            Patterns.of(rule.paths),
            Patterns.of(rule.semantic_ids),
        )

    def applies_to(self, roles: frozenset[str], operation: AccessOperation) -> bool:
        return (
            operation in self.operations
            and bool(roles)
            and (ANY_ROLE in self.roles or not self.roles.isdisjoint(roles))
        )

    @property
    def unconstrained(self) -> bool:
        """Whether the rule gives no target list (it covers everything)."""
        return not any(
            patterns.restricts
            for patterns in (self.shells, self.submodels, self.concept_descriptions, self.paths, self.semantic_ids)
        )

    @property
    def varies_inside_submodels(self) -> bool:
        """Whether the rule restricts paths or semantic ids (it may match some elements of a submodel only)."""
        return self.paths.restricts or self.semantic_ids.restricts

    def match_outer(self, target: Target) -> Match:
        """The match on shells, submodels and concept descriptions only."""
        return _combine(
            (
                self.shells.match(target.shells),
                self.submodels.match(target.submodels),
                self.concept_descriptions.match(target.concept_descriptions),
            )
        )

    def match_inner(self, target: Target) -> Match:
        """The match on paths and semantic ids only."""
        return _combine((self.paths.match(target.paths), self.semantic_ids.match(target.semantic_ids)))

    def match(self, target: Target) -> Match:
        return _combine((self.match_outer(target), self.match_inner(target)))


def _combine(matches: Iterable[Match]) -> Match:
    result = Match.YES
    for match in matches:
        if match is Match.NO:
            return Match.NO
        if match is Match.MAYBE:
            result = Match.MAYBE
    return result


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of checking one request; ``reason`` is for logs and the audit log, never secret."""

    allowed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules that apply to one set of roles and one operation."""

    allow: tuple[CompiledRule, ...]
    deny: tuple[CompiledRule, ...]

    @property
    def unrestricted(self) -> bool:
        """Everything is allowed: an allow rule without target lists and no deny rule."""
        return not self.deny and any(rule.unconstrained for rule in self.allow)

    def decide(self, target: Target) -> Decision:
        for rule in self.deny:
            if rule.match(target) is not Match.NO:
                return Decision(False, f"denied by security.rules[{rule.index}]")
        for rule in self.allow:
            if rule.match(target) is Match.YES:
                return Decision(True, f"allowed by security.rules[{rule.index}]")
        return Decision(False, "no rule allows it")


class AccessPolicy:
    """The compiled ``security.rules``: :meth:`rules_for` a caller's roles and an operation, then decide."""

    def __init__(self, rules: Sequence[AccessRule]) -> None:
        self.rules = tuple(CompiledRule.of(index, rule) for index, rule in enumerate(rules))
        self._rule_sets: dict[tuple[frozenset[str], AccessOperation], RuleSet] = {}

    def rules_for(self, roles: frozenset[str], operation: AccessOperation) -> RuleSet:
        """The allow and deny rules that apply to ``roles`` doing ``operation`` (cached)."""
        key = (roles, operation)
        found = self._rule_sets.get(key)
        if found is None:
            applying = [rule for rule in self.rules if rule.applies_to(roles, operation)]
            found = RuleSet(
                tuple(rule for rule in applying if rule.allow), tuple(rule for rule in applying if not rule.allow)
            )
            if len(self._rule_sets) > 4096:
                self._rule_sets.clear()
            self._rule_sets[key] = found
        return found

    def decide(self, roles: frozenset[str], operation: AccessOperation, target: Target) -> Decision:
        """Whether ``roles`` may do ``operation`` on ``target``."""
        return self.rules_for(roles, operation).decide(target)
