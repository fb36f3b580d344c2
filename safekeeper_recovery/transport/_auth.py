"""Optional JWT auth: Ed25519 (EdDSA) tokens, verified with a public key on every node.

Scopes (DESIGN.md "Security"):

* ``safekeeperdata`` — peers and operators: everything.
* ``tenant`` with ``tenant_id`` — a proposer: only that tenant's timelines, and there only
  what a proposer does: ``wal_push`` and ``wal_stream`` *without* a term (committed WAL).
  The recovery endpoints — ``wal_stream`` with a term, which serves uncommitted WAL, and
  ``wal_push?recovery=true`` — need ``safekeeperdata`` (issue 20).

Tokens carry ``iat`` and, unless issued without one, ``exp``; an expired token is invalid
(401).

A request without a valid token is refused with 401; a valid token whose scope does not
cover the request with 403 (:class:`AuthError` carries the status).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..core import AuthError, TenantId

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "SCOPE_SAFEKEEPER_DATA",
    "SCOPE_TENANT",
    "Authenticator",
    "Scope",
    "bearer_token",
    "generate_keypair",
    "issue_token",
]

SCOPE_SAFEKEEPER_DATA: Final = "safekeeperdata"
SCOPE_TENANT: Final = "tenant"
Scope = Literal["safekeeperdata", "tenant"]
_ALGORITHM: Final = "EdDSA"
DEFAULT_TOKEN_LIFETIME: Final = 90 * 24 * 3600.0
"""What ``token`` issues by default (seconds): 90 days."""


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as PEM: ``(private_key_pem, public_key_pem)``."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def issue_token(
    private_key_pem: bytes,
    scope: Scope,
    tenant_id: TenantId | None = None,
    *,
    expires_in: float | None = None,
    now: float | None = None,
) -> str:
    """Sign a token. ``tenant`` scope requires ``tenant_id``.

    ``expires_in`` (seconds, > 0) sets ``exp``; ``None`` issues a token that never expires
    (the library default; the ``token`` command defaults to
    :data:`DEFAULT_TOKEN_LIFETIME`). ``now`` is the issue time (default: the wall clock).
    """
    if scope == SCOPE_TENANT and tenant_id is None:
        raise ValueError("a tenant-scoped token needs a tenant_id")
    if expires_in is not None and not expires_in > 0:
        raise ValueError(f"expires_in must be positive, got {expires_in!r}")
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the private key is not an Ed25519 key")
    issued = int(time.time() if now is None else now)
    claims: dict[str, str | int] = {"scope": scope, "iat": issued}
    if tenant_id is not None:
        claims["tenant_id"] = str(tenant_id)
    if expires_in is not None:
        claims["exp"] = issued + max(1, round(expires_in))
    return jwt.encode(claims, key, algorithm=_ALGORITHM)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Authenticator:
    """Checks tokens against one public key. ``Authenticator(None)`` means auth is off."""

    def __init__(self, public_key_pem: bytes | None) -> None:
        self._key: Ed25519PublicKey | None = None
        if public_key_pem is not None:
            key = serialization.load_pem_public_key(public_key_pem)
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("the auth public key is not an Ed25519 key")
            self._key = key

    @classmethod
    def from_file(cls, path: Path | None) -> Authenticator:
        return cls(path.read_bytes() if path is not None else None)

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def check(
        self, token: str | None, *, tenant_id: TenantId | None, peer_only: str | None = None
    ) -> None:
        """Allow or raise :class:`AuthError` (401 bad/missing token, 403 wrong scope).

        ``tenant_id`` is the tenant the request touches, or ``None`` for node-wide endpoints
        (which need ``safekeeperdata``). ``peer_only`` names a tenant's endpoint that only
        peers may use (``safekeeperdata``); a tenant token gets 403 saying so.
        """
        if self._key is None:
            return
        if token is None:
            raise AuthError("missing bearer token", status=401)
        try:
            claims = jwt.decode(token, self._key, algorithms=[_ALGORITHM])
        except jwt.InvalidTokenError as e:
            raise AuthError(f"invalid token: {e}", status=401) from None
        scope = claims.get("scope")
        if scope == SCOPE_SAFEKEEPER_DATA:
            return
        if scope == SCOPE_TENANT:
            if peer_only is not None:
                raise AuthError(
                    f"{peer_only} is for peers: it needs a safekeeperdata token, not a tenant "
                    "token", status=403,
                )
            if tenant_id is None:
                raise AuthError("a tenant token cannot access node-wide endpoints", status=403)
            if claims.get("tenant_id") != str(tenant_id):
                raise AuthError(f"token is not valid for tenant {tenant_id}", status=403)
            return
        raise AuthError(f"token scope {scope!r} is not allowed here", status=403)
