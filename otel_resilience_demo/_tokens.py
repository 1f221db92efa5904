"""Signed session tokens (HMAC-SHA256 with an expiry) for the example chat service.

A token carries the user, the session id and the expiry, signed with the service's secret.
Its signature and expiry are checked on every WebSocket connection, whatever the state of
Redis; the Redis session (which a logout deletes) is checked on top when Redis answers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["InvalidToken", "TokenClaims", "sign_token", "verify_token"]


class InvalidToken(Exception):
    """A token that is malformed, wrongly signed or expired; the message says which."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a valid token says: who, which session, valid until (seconds since the epoch)."""

    user: str
    session_id: str
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def sign_token(
    secret: bytes,
    user: str,
    session_id: str,
    *,
    ttl_seconds: float = 3600.0,
    clock: Callable[[], float] = time.time,
) -> str:
    """A token for ``user``'s session ``session_id``, valid for ``ttl_seconds``."""
    claims = {"sub": user, "sid": session_id, "exp": clock() + ttl_seconds}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_signature(secret, payload)}"


def verify_token(
    secret: bytes, token: str, *, clock: Callable[[], float] = time.time
) -> TokenClaims:
    """The claims of ``token``; raises ``InvalidToken`` naming what is wrong with it."""
    payload, dot, signature = token.partition(".")
    if not dot or not payload or not signature:
        raise InvalidToken("malformed token: expected '<payload>.<signature>'")
    if not hmac.compare_digest(signature, _signature(secret, payload)):
        raise InvalidToken("bad token signature")
    try:
        claims = json.loads(_unb64(payload))
        user, session_id, expires_at = claims["sub"], claims["sid"], float(claims["exp"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidToken("malformed token payload") from None
    if not isinstance(user, str) or not isinstance(session_id, str):
        raise InvalidToken("malformed token payload")
    if expires_at <= clock():
        raise InvalidToken("token expired")
    return TokenClaims(user, session_id, expires_at)
