"""Errors that users see and catch."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = ["CircuitOpenError", "ConcurrencyLimitError", "ConfigError", "UnknownDependencyError"]


class CircuitOpenError(Exception):
    """A call was rejected without being attempted because its dependency's breaker is open.

    ``retry_after`` is the number of seconds until the breaker admits a probe call
    (``inf`` while it is forced open). Client integrations raise a subclass that is also
    the client library's own connection error, so existing ``except`` clauses still work.
    """

    def __init__(self, dependency: str, retry_after: float) -> None:
        self.dependency = dependency
        self.retry_after = retry_after
        if retry_after == float("inf"):
            when = "until it is reset"
        else:
            when = f"retry after {retry_after:.3g}s"
        super().__init__(f"circuit for dependency {dependency!r} is open; {when}")

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[str, float]]:
        return (type(self), (self.dependency, self.retry_after))


class ConcurrencyLimitError(CircuitOpenError):
    """A call was rejected without being attempted because its dependency already has as
    many calls in flight as its concurrency limit allows.

    A ``CircuitOpenError``, so code that handles an open breaker handles this too; client
    integrations raise a subclass that is also the client's own connection error.
    ``retry_after`` is a hint of about one call's latency; ``limit`` the limit at the time.
    """

    def __init__(self, dependency: str, retry_after: float, limit: int | None = None) -> None:
        self.limit = limit
        super().__init__(dependency, retry_after)
        at = f" ({limit} calls in flight)" if limit is not None else ""
        self.args = (
            f"dependency {dependency!r} is at its concurrency limit{at}; "
            f"retry after {retry_after:.3g}s",
        )

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[Any, ...]]:
        return (type(self), (self.dependency, self.retry_after, self.limit))


class ConfigError(ValueError):
    """A configuration is invalid; the message names the source, the key path and the rule."""

    def __init__(self, message: str, *, source: str | None = None, path: str | None = None) -> None:
        self.source = source
        self.path = path
        prefix = ""
        if source:
            prefix += f"{source}: "
        if path:
            prefix += f"{path}: "
        super().__init__(prefix + message)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A " (did you mean 'x'?)" hint for a misspelt ``word``, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class UnknownDependencyError(KeyError):
    """A dependency name that the registry does not know."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        self.name = name
        listing = ", ".join(known) if known else "none declared"
        self.message = f"unknown dependency {name!r}{did_you_mean(name, known)}; known: {listing}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message
