"""Hostile-input test support: the server the attack corpus (``tests/test_attacks.py``) is run against.

The corpus itself is generated at test time (zip bombs, deep nesting, long strings), so the repository
holds no large or dangerous files.
"""
