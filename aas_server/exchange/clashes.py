"""Concept descriptions of an import whose ids the hub holds already.

Packages carry the concept descriptions of the templates they use, so two packages of one vendor
(or two templates) often carry the same ones. A clash of concept descriptions is therefore settled
here rather than refusing the whole package: one that is the same object as the stored one (the
same JSON form, set-like lists in any order) is skipped; one that differs is left out too, the
stored one is kept, and the report says so (``dropped``, with what the package had). Clashes of
shells and submodels are not settled here: they stay the caller's ``409``.
"""

from __future__ import annotations

from collections.abc import Mapping

from basyx.aas import model

from aas_server.exchange.package import ImportResult
from aas_server.exchange.report import ImportIssue
from aas_server.exchange.roundtrip import same_json


def settle_concept_descriptions(
    result: ImportResult, stored: Mapping[str, model.ConceptDescription]
) -> list[ImportIssue]:
    """Leave out of ``result`` the concept descriptions whose id is in ``stored``; the issues for differing ones.

    An identical one is skipped without an issue (the hub holds it as it is); a differing one is
    reported as ``dropped`` in ``result.report`` (its ``counts_taken`` lowered), and the stored one
    stays as it is.
    """
    kept: list[model.Identifiable] = []
    issues: list[ImportIssue] = []
    for identifiable in result.identifiables:
        existing = stored.get(identifiable.id) if isinstance(identifiable, model.ConceptDescription) else None
        if existing is None:
            kept.append(identifiable)
            continue
        if same_json(identifiable, existing):
            continue
        result.report.add(
            "dropped",
            f"conceptDescriptions[id={identifiable.id}]",
            f"concept description {identifiable.id!r} exists with different content; the stored one is kept"
            " and the package's left out",
            {"concept_descriptions": 1},
        )
        result.report.counts_taken["concept_descriptions"] -= 1
        issues.append(result.report.issues[-1])
    result.identifiables = kept
    return issues
