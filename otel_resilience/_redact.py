"""Redaction: error texts cleaned of secrets before they reach ``/health`` or a log.

The rule: URL credentials and query strings are removed; ``key=value``, ``key: value``
(quoted or not, JSON included) and ``Bearer ...`` values are masked where the key names a
secret (password, passwd, pwd, secret, token, key, authorization, credential, signature)
in any case or compound (``db_password``, ``AWS_SECRET_ACCESS_KEY``, ``access-token``).
A text that still looks like it holds a secret after that is not shown at all: the
caller shows the exception type alone.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "describe_error", "redact", "redact_or_none"]

MASK = "***"
_MAX_CHARS = 200

_SECRET_WORD = r"(?:password|passwd|pwd|secret|token|key|authorization|credential|signature)"
# A key naming a secret: the word anywhere in an identifier-like run (db_password,
# AWS_SECRET_ACCESS_KEY, X-Api-Key, clientSecret), optionally quoted.
_SECRET_KEY = rf"[\"']?[A-Za-z0-9_.\-]*{_SECRET_WORD}[A-Za-z0-9_.\-]*[\"']?"
_AUTH_SCHEME = r"(?:bearer|basic|token|digest|negotiate|apikey)"
# Unquoted, a value runs to the next space or quote: "password=a&b" masks "a&b" whole.
_VALUE = r"(?:\"[^\"]*\"?|'[^']*'?|[^\s'\"]+)"

_URL = re.compile(r"\b(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>[^\s'\"]*)")
_KEY_VALUE = re.compile(
    rf"(?P<key>{_SECRET_KEY}\s*[=:]\s*)(?P<scheme>{_AUTH_SCHEME}\s+)?(?P<value>{_VALUE})",
    re.IGNORECASE,
)
_BEARER = re.compile(
    rf"\b(?P<scheme>{_AUTH_SCHEME})\s+(?P<value>[A-Za-z0-9._~+/=\-]{{8,}})", re.IGNORECASE
)
# What must not survive: a secret key followed by a value other than the mask.
_LEFTOVER = re.compile(
    rf"{_SECRET_KEY}\s*[=:]\s*(?!(?:{_AUTH_SCHEME}\s+)?[\"']?\*\*\*)\S",
    re.IGNORECASE,
)


def _mask_key_value(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group('key')}{match.group('scheme') or ''}{quote}{MASK}{quote}"


def _clean_url(match: re.Match[str]) -> str:
    """A URL with its credentials and its query (and fragment) masked. Where the parts are
    ambiguous (an "@" past the host, a query with no path), all but the scheme goes."""
    scheme, rest = match.group("scheme"), match.group("rest")
    slash = rest.find("/")
    authority, tail = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if "@" in tail:
        return f"{scheme}://{MASK}"
    credentials = ""
    if "@" in authority:
        authority = authority.rpartition("@")[2]  # a password may itself hold an "@"
        credentials = f"{MASK}@"
    if any(mark in authority for mark in "?#=&"):
        return f"{scheme}://{MASK}"
    cut = min((i for i in (tail.find("?"), tail.find("#")) if i >= 0), default=-1)
    if cut >= 0:
        tail = f"{tail[:cut]}?{MASK}"
    return f"{scheme}://{credentials}{authority}{tail}"


def redact(text: str) -> str:
    """``text`` with URL credentials and query strings removed and secret values masked."""
    text = _URL.sub(_clean_url, text)
    text = _KEY_VALUE.sub(_mask_key_value, text)
    return _BEARER.sub(rf"\g<scheme> {MASK}", text)


def redact_or_none(text: str) -> str | None:
    """``redact(text)``, or None when what is left still looks like it holds a secret."""
    cleaned = redact(text)
    if _LEFTOVER.search(cleaned):
        return None
    return cleaned


def describe_error(exc: BaseException, max_chars: int = _MAX_CHARS) -> str:
    """``Type: cleaned message`` (cut to ``max_chars``), or the type alone when the
    message cannot be read or cleaned."""
    name = type(exc).__name__
    try:
        message = redact_or_none(" ".join(str(exc).split()))
    except Exception:
        message = None
    if not message:
        return name
    if len(message) > max_chars:
        message = message[: max_chars - 3] + "..."
    return f"{name}: {message}"
