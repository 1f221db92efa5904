"""Errors that users see and catch."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
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


_LIMIT_RETRY_AFTER = 0.01


class ConcurrencyLimitError(CircuitOpenError):
    """A call was rejected without being attempted because its dependency already has as
    many calls in flight as its concurrency limit allows.

    A ``CircuitOpenError``, so code that handles an open breaker handles this too; client
    integrations raise a subclass that is also the client's own connection error.
    ``retry_after`` is a back-off hint (the guards give a tenth of the breaker's open time);
    ``limit`` the limit at the time, when known.
    """

    def __init__(self, dependency: str, retry_after: float, limit: int | None = None) -> None:
        self.limit = limit
        # Never 0 (a closed breaker has no time left to wait), so a caller that sleeps
        # retry_after never spins.
        retry_after = retry_after if retry_after > 0 else _LIMIT_RETRY_AFTER
        super().__init__(dependency, retry_after)
        at = f" ({limit} calls in flight)" if limit is not None else ""
        self.args = (
            f"dependency {dependency!r} is at its concurrency limit{at}; "
            f"retry after {retry_after:.3g}s",
        )

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[Any, ...]]:
        return (type(self), (self.dependency, self.retry_after, self.limit))


class ConfigError(ValueError):
    """A configuration is invalid; the message names the source, the key path and the rule.

    A config with several problems raises one ConfigError listing them all, one per line;
    ``errors`` holds each as a ConfigError of its own (``(self,)`` for a single problem).
    """

    def __init__(self, message: str, *, source: str | None = None, path: str | None = None) -> None:
        self.source = source
        self.path = path
        self.message = message
        self.errors: tuple[ConfigError, ...] = (self,)
        prefix = ""
        if source:
            prefix += f"{source}: "
        if path:
            prefix += f"{path}: "
        super().__init__(prefix + message)

    @classmethod
    def combine(cls, errors: Sequence[ConfigError], *, limit: int = 50) -> ConfigError:
        """One error holding ``errors`` (at least one), the first ``limit`` of them spelt out."""
        if len(errors) == 1:
            return errors[0]
        first = errors[0]
        lines = [str(error) for error in errors[:limit]]
        if len(errors) > limit:
            lines.append(
                f"{first.source + ': ' if first.source else ''}... and "
                f"{len(errors) - limit} more errors"
            )
        combined = cls(first.message, source=first.source, path=first.path)
        combined.errors = tuple(errors)
        combined.args = ("\n".join(lines),)
        return combined

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


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
