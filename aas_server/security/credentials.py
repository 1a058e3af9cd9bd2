"""Who is calling: bearer tokens (JWT, RFC 7519 / RFC 8725) and API keys, turned into a :class:`Principal`.

Tokens are verified with PyJWT: the signature with the configured HS256 secret or RS256 public key
(the algorithm is one of the configured ones, picked by the token's header; ``none`` never), and
the claims ``exp`` (required), ``nbf`` and ``iat`` within ``leeway``, ``iss`` and ``aud`` equal to
the configured ones. The roles come from ``roles_claim``. A verified token is remembered (by its
full text, signature included) until it expires, so a client reusing it costs one lookup. API keys
are compared by their SHA-256 against every configured key with ``hmac.compare_digest`` (no early
exit).

Error messages say what kind of check failed, never the key material or the token's contents.

Left out: fetching keys from a JWKS endpoint (OpenID Connect discovery), token introspection,
several issuers at once, ES256/EdDSA.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from aas_server.config import ApiKeySettings, TokenAlgorithm, TokenSettings

MINIMUM_SECRET_LENGTH = 32
"""Bytes an HS256 secret needs at least (RFC 7518 §3.2: a key of the hash's size)."""

VERIFIED_TOKENS_KEPT = 1024
"""Verified tokens remembered until they expire."""


class CredentialError(Exception):
    """The credentials sent are not valid; the message is safe to show to the caller."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated (or anonymous) caller: a name for the audit log and the roles rules look at."""

    name: str
    kind: str
    """``anonymous``, ``api-key``, ``token`` or ``opcua-user``."""
    roles: frozenset[str]

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"


def anonymous(role: str | None) -> Principal:
    """The principal of a request without credentials (no roles unless ``anonymous_role`` is set)."""
    return Principal("anonymous", "anonymous", frozenset({role}) if role else frozenset())


def load_public_key(pem: bytes) -> RSAPublicKey:
    """An RSA public key from PEM (``ValueError`` if it is not one)."""
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


class TokenVerifier:
    """Verifies bearer tokens against one issuer's settings."""

    def __init__(self, settings: TokenSettings, secret: bytes | None, public_key: RSAPublicKey | None) -> None:
        self._settings = settings
        self._keys: dict[str, Any] = {}
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        if TokenAlgorithm.HS256 in settings.algorithms:
            if secret is None or len(secret) < MINIMUM_SECRET_LENGTH:
                raise ValueError(f"the HS256 secret must have at least {MINIMUM_SECRET_LENGTH} bytes")
            self._keys["HS256"] = secret
        if TokenAlgorithm.RS256 in settings.algorithms:
            if public_key is None:
                raise ValueError("RS256 needs a public key")
            self._keys["RS256"] = public_key

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; ``CredentialError`` naming the failed check otherwise."""
        settings = self._settings
        remembered = self._verified.get(token)
        if remembered is not None:
            principal, expires = remembered
            if time.time() <= expires + settings.leeway:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise CredentialError("the bearer token is malformed") from None
        algorithm = str(header.get("alg"))
        key = self._keys.get(algorithm)
        if key is None:
            raise CredentialError("the bearer token is signed with an algorithm this server does not accept")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise CredentialError("the bearer token has expired") from None
        except jwt.ImmatureSignatureError:
            raise CredentialError("the bearer token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise CredentialError("the bearer token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise CredentialError("the bearer token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise CredentialError("the bearer token's signature is not valid") from None
        except jwt.MissingRequiredClaimError as error:
            raise CredentialError(f"the bearer token lacks the {error.claim!r} claim") from None
        except jwt.InvalidTokenError:
            raise CredentialError("the bearer token is not valid") from None
        subject = claims.get("sub")
        principal = Principal(
            subject if isinstance(subject, str) and subject else "token",
            "token",
            roles_from_claims(claims, settings.roles_claim),
        )
        self._verified[token] = (principal, float(claims["exp"]))
        if len(self._verified) > VERIFIED_TOKENS_KEPT:
            self._verified.popitem(last=False)
        return principal


def roles_from_claims(claims: Mapping[str, Any], roles_claim: str) -> frozenset[str]:
    """Roles from ``roles_claim`` (dots reach into objects): a list of names or a space-separated string."""
    value: Any = claims
    for part in roles_claim.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(item for item in value if isinstance(item, str) and item)
    return frozenset()


class ApiKeyRing:
    """The configured API keys by SHA-256, compared in constant time."""

    def __init__(self, keys: Sequence[tuple[str, frozenset[str], bytes]]) -> None:
        self._keys = list(keys)

    @classmethod
    def from_settings(cls, settings: Sequence[ApiKeySettings], environ: Mapping[str, str]) -> ApiKeyRing:
        """The keys of the settings; ``ValueError`` naming the key when its environment variable is unset."""
        keys: list[tuple[str, frozenset[str], bytes]] = []
        for key in settings:
            if key.sha256 is not None:
                digest = bytes.fromhex(key.sha256)
            else:
                assert key.key_env is not None
                value = environ.get(key.key_env)
                if not value:
                    raise ValueError(f"API key {key.name!r}: environment variable {key.key_env} is not set")
                digest = hashlib.sha256(value.encode()).digest()
            keys.append((key.name, frozenset(key.roles), digest))
        return cls(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def match(self, presented: str) -> Principal | None:
        """The principal of the key ``presented``, or ``None`` if no configured key is it."""
        digest = hashlib.sha256(presented.encode()).digest()
        found: Principal | None = None
        for name, roles, expected in self._keys:
            if hmac.compare_digest(digest, expected) and found is None:
                found = Principal(name, "api-key", roles)
        return found


class Authenticator:
    """Turns the credentials of a request into a principal.

    ``Authorization: Bearer <JWT>`` or ``X-API-Key: <key>``; a request with neither is anonymous
    (``None``). Both at once, or either invalid, is a ``CredentialError``.
    """

    def __init__(self, tokens: TokenVerifier | None, keys: ApiKeyRing) -> None:
        self.tokens = tokens
        self.keys = keys

    def authenticate(self, authorization: str | None, api_key: str | None) -> Principal | None:
        if authorization is not None and api_key is not None:
            raise CredentialError("send either a bearer token or an API key, not both")
        if api_key is not None:
            principal = self.keys.match(api_key)
            if principal is None:
                raise CredentialError("the API key is not valid")
            return principal
        if authorization is None:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise CredentialError("the Authorization header must be 'Bearer <token>'")
        if self.tokens is None:
            raise CredentialError("this server accepts no bearer tokens")
        return self.tokens.verify(token.strip())
