"""Access control of the hub, built once from ``HubSettings.security`` (``docs/security.md``).

:class:`AccessControl` holds the authenticator (tokens, API keys), the rules
(:class:`~aas_server.security.rules.AccessPolicy`) and the audit log; the REST middleware
(``aas_server.api.auth``) and the OPC UA write hook use the same one, so one rule set governs both:
OPC UA users' roles (``read-only``, ``operator``, ``admin``) are rule roles of the same names.

:func:`check_security` finds what would stop the hub (or make a rule useless) with the place in
the settings file: rules naming roles nobody has, malformed globs, missing key material, unset
environment variables. ``aas-server check`` prints them; :meth:`AccessControl.from_settings` refuses
to start with them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from aas_server.config import HubSettings, Role, TokenAlgorithm
from aas_server.errors import ConfigurationError
from aas_server.security.audit import AuditLog
from aas_server.security.credentials import (
    MINIMUM_SECRET_LENGTH,
    ApiKeyRing,
    Authenticator,
    CredentialError,
    Principal,
    TokenVerifier,
    anonymous,
    load_public_key,
)
from aas_server.security.rules import ANY_ROLE, MAX_PATTERN_LENGTH, AccessPolicy

_LOG = logging.getLogger(__name__)

_PATH_GLOB = re.compile(r"[A-Za-z0-9_\-.\[\]*?]+")


@dataclass(frozen=True, slots=True)
class SettingsProblem:
    """Something wrong in the ``security`` section, at ``location`` (``security.rules[2].roles[0]``)."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


def _known_roles(settings: HubSettings) -> set[str]:
    security = settings.security
    known = {ANY_ROLE, *security.roles, *(role.value for role in Role)}
    if security.anonymous_role:
        known.add(security.anonymous_role)
    for key in security.api_keys:
        known.update(key.roles)
    return known


def check_security(settings: HubSettings, environ: Mapping[str, str] | None = None) -> list[SettingsProblem]:
    """Problems of ``settings.security`` beyond its syntax (``environ`` defaults to ``os.environ``).

    Key material and environment variables are checked only while access control is enabled.
    """
    environ = os.environ if environ is None else environ
    security = settings.security
    problems: list[SettingsProblem] = []
    known = _known_roles(settings)
    for index, rule in enumerate(security.rules):
        where = f"security.rules[{index}]"
        for role_index, role in enumerate(rule.roles):
            if role not in known:
                problems.append(
                    SettingsProblem(
                        f"{where}.roles[{role_index}]",
                        f"role {role!r} is given to no API key, OPC UA user or anonymous_role; "
                        "list it in security.roles if tokens carry it",
                    )
                )
        for field_name in ("shells", "submodels", "concept_descriptions", "paths", "semantic_ids"):
            for pattern_index, pattern in enumerate(getattr(rule, field_name)):
                message = _pattern_problem(pattern, field_name == "paths")
                if message:
                    problems.append(SettingsProblem(f"{where}.{field_name}[{pattern_index}]", message))
    names: dict[str, int] = {}
    for index, key in enumerate(security.api_keys):
        if key.name in names:
            problems.append(
                SettingsProblem(f"security.api_keys[{index}].name", f"{key.name!r} is also api_keys[{names[key.name]}]")
            )
        names.setdefault(key.name, index)
    if not security.enabled:
        return problems
    for index, key in enumerate(security.api_keys):
        if key.key_env is not None and not environ.get(key.key_env):
            problems.append(
                SettingsProblem(f"security.api_keys[{index}].key_env", f"environment variable {key.key_env} is not set")
            )
    tokens = security.tokens
    if tokens is not None:
        if TokenAlgorithm.HS256 in tokens.algorithms:
            if tokens.hs256_secret_env is None:
                problems.append(SettingsProblem("security.tokens.hs256_secret_env", "HS256 needs hs256_secret_env"))
            else:
                secret = environ.get(tokens.hs256_secret_env)
                if not secret:
                    problems.append(
                        SettingsProblem(
                            "security.tokens.hs256_secret_env",
                            f"environment variable {tokens.hs256_secret_env} is not set",
                        )
                    )
                elif len(secret.encode()) < MINIMUM_SECRET_LENGTH:
                    problems.append(
                        SettingsProblem(
                            "security.tokens.hs256_secret_env",
                            f"the secret in {tokens.hs256_secret_env} is shorter than {MINIMUM_SECRET_LENGTH} bytes",
                        )
                    )
        if TokenAlgorithm.RS256 in tokens.algorithms:
            if tokens.rs256_public_key is None:
                problems.append(SettingsProblem("security.tokens.rs256_public_key", "RS256 needs rs256_public_key"))
            else:
                try:
                    load_public_key(tokens.rs256_public_key.read_bytes())
                except OSError as error:
                    problems.append(
                        SettingsProblem(
                            "security.tokens.rs256_public_key",
                            f"cannot read {tokens.rs256_public_key}: {error.strerror or error}",
                        )
                    )
                except ValueError:
                    problems.append(
                        SettingsProblem(
                            "security.tokens.rs256_public_key",
                            f"{tokens.rs256_public_key} is not a PEM RSA public key",
                        )
                    )
    return problems


def _pattern_problem(pattern: str, is_path: bool) -> str | None:
    if not pattern:
        return "an empty pattern matches nothing; leave the list out to match everything"
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"a pattern has at most {MAX_PATTERN_LENGTH} characters"
    if is_path and not _PATH_GLOB.fullmatch(pattern):
        return f"{pattern!r} is not an idShort path glob (idShorts, '.', '[n]', '*', '?')"
    return None


@dataclass(slots=True)
class AccessControl:
    """Authentication, rules and audit log of one hub."""

    enabled: bool
    authenticator: Authenticator
    policy: AccessPolicy
    anonymous_role: str | None
    audit: AuditLog

    @classmethod
    def from_settings(cls, settings: HubSettings, environ: Mapping[str, str] | None = None) -> AccessControl:
        """Build from the settings (reads the RS256 key file: call off the event loop).

        ``ConfigurationError`` lists every problem :func:`check_security` finds. Logs a warning when
        REST is open (``enabled: false``) or closed to everyone (no credentials, no anonymous role).
        """
        environ = os.environ if environ is None else environ
        security = settings.security
        problems = check_security(settings, environ)
        if problems:
            raise ConfigurationError("; ".join(str(problem) for problem in problems))
        audit = AuditLog(settings.audit_log_path)
        if not security.enabled:
            _LOG.warning(
                "REST access control is off (security.enabled: false): anyone reaching the REST port can read "
                "and change the twins; writes are still recorded in %s",
                settings.audit_log_path,
            )
            return cls(False, Authenticator(None, ApiKeyRing([])), AccessPolicy(()), None, audit)
        verifier: TokenVerifier | None = None
        tokens = security.tokens
        if tokens is not None:
            secret_text = environ.get(tokens.hs256_secret_env) if tokens.hs256_secret_env else None
            public_key = (
                load_public_key(tokens.rs256_public_key.read_bytes())
                if tokens.rs256_public_key is not None and TokenAlgorithm.RS256 in tokens.algorithms
                else None
            )
            verifier = TokenVerifier(tokens, secret_text.encode() if secret_text else None, public_key)
        keys = ApiKeyRing.from_settings(security.api_keys, environ)
        if verifier is None and not len(keys) and security.anonymous_role is None:
            _LOG.warning(
                "REST access control is on but no API keys, tokens or anonymous_role are configured: "
                "every REST request is answered 401 (see docs/security.md)"
            )
        elif not security.rules:
            _LOG.warning("REST access control has no rules: every REST request is answered 401 or 403")
        return cls(True, Authenticator(verifier, keys), AccessPolicy(security.rules), security.anonymous_role, audit)

    def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        """The caller of a request: from its credentials, else anonymous; ``CredentialError`` if invalid."""
        principal = self.authenticator.authenticate(authorization, api_key)
        return principal if principal is not None else anonymous(self.anonymous_role)

    @staticmethod
    def opcua_principal(user_name: str | None, role: Role | None) -> Principal:
        """The principal of an OPC UA session user; rules see the user's role under its name."""
        if role is None:
            return Principal(user_name or "anonymous", "anonymous", frozenset())
        return Principal(user_name or "anonymous", "opcua-user", frozenset({role.value}))

    async def aclose(self) -> None:
        """Flush and close the audit log."""
        await self.audit.aclose()


__all__ = ["AccessControl", "CredentialError", "SettingsProblem", "check_security"]
