"""Unit conversion between UNECE Recommendation 20 codes, with pint.

(stub: to be completed by the normalisation work)
"""

from __future__ import annotations


def check_conversion(source: str, target: str) -> None:
    """Raise ``ValueError`` naming both units if ``source`` cannot be converted into ``target``."""
