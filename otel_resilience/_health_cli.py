"""``otel-resilience status URL``: a service's health document as a table and an exit code."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ._output import Output, fit_table

__all__ = ["EXIT_CODES", "EXIT_UNREACHABLE", "fetch_health", "show_status"]

EXIT_CODES = {"healthy": 0, "degraded": 1, "unhealthy": 2}
EXIT_UNREACHABLE = 3
"""The exit code when the URL cannot be reached or does not answer with a health document."""

_STYLES = {"healthy": "green", "degraded": "yellow", "unhealthy": "bold red"}


class Unreachable(Exception):
    """The health URL did not give a health document."""


def _health_url(url: str) -> str:
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/health")
    return urlunsplit(parts)


def fetch_health(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET the health document at ``url`` (a 503 still carries one); raise Unreachable."""
    request = urllib.request.Request(
        _health_url(url), headers={"Accept": "application/json"}, method="GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        if exc.code != 503 or not body:
            raise Unreachable(f"HTTP {exc.code} from {_health_url(url)}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"cannot reach {_health_url(url)}: {reason}") from None
    try:
        document = json.loads(body)
    except ValueError:
        raise Unreachable(f"{_health_url(url)} did not answer with JSON") from None
    if not isinstance(document, dict) or document.get("status") not in EXIT_CODES:
        raise Unreachable(f"{_health_url(url)} did not answer with a health document")
    return document


def _number(value: Any, suffix: str = "") -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.3g}{suffix}"
    return "-"


def _rows(document: dict[str, Any]) -> list[tuple[list[str], str, bool]]:
    """Per dependency: its cells (without the error), its last error, whether it is healthy."""
    rows = []
    dependencies = document.get("dependencies") or {}
    for name, entry in dependencies.items():
        if not isinstance(entry, dict):
            continue
        healthy = bool(entry.get("healthy"))
        mark = "yes" if healthy else "no"
        if healthy and entry.get("slow"):
            mark = "slow"
        criticality = str(entry.get("criticality", "?"))
        if entry.get("observe_only"):
            criticality += " (observed)"
        rate = entry.get("failure_rate")
        error = str(entry.get("last_error_type") or "-")
        check = entry.get("health_check")
        if isinstance(check, dict) and check.get("passing") is False and check.get("error"):
            error = f"check: {check['error']}"
        elif isinstance(check, dict) and check.get("status") == "unknown" and error == "-":
            error = "check: unknown (no address yet)"
        cells = [
            str(name),
            criticality,
            str(entry.get("state", "?")),
            mark,
            _number(rate * 100 if isinstance(rate, (int, float)) else None, "%"),
            _number(entry.get("retry_after_seconds"), "s"),
        ]
        rows.append((cells, error, healthy))
    return rows


_HEADERS = ["dependency", "criticality", "state", "healthy", "fail rate", "retry in"]


def render(document: dict[str, Any], out: Output) -> None:
    """Print the health document: a title line, then one line per dependency.

    The columns fit the width, names and headers are never cut: when the last errors do not
    fit as a column they follow the table, one per line; when even the table does not fit,
    each dependency gets a short block.
    """
    status = document["status"]
    out.paragraph(
        f"{document.get('service', '?')}: {status} at {document.get('checked_at', '?')}",
        _STYLES[status],
    )
    rows = _rows(document)
    styles = [None if healthy else "red" for _, _, healthy in rows]
    with_errors = [[*cells, error] for cells, error, _ in rows]
    lines = fit_table([*_HEADERS, "last error"], with_errors, out.width)
    if lines is not None:
        out.line(lines[0], "bold")
        for line, style in zip(lines[1:], styles, strict=True):
            out.line(line, style)
        return
    if fit_table(_HEADERS, [cells for cells, _, _ in rows], out.width) is None:
        out.table([*_HEADERS, "last error"], with_errors, styles=styles)
        return
    out.table(_HEADERS, [cells for cells, _, _ in rows], styles=styles)
    failing = [(cells[0], error) for cells, error, _ in rows if error != "-"]
    if failing:
        out.line("last errors:", "bold")
        for name, error in failing:
            out.paragraph(f"  {name}: {error}", "red", indent="    ")


def show_status(
    url: str, out: Output, errors: Output, *, timeout: float = 5.0, as_json: bool = False
) -> int:
    """Fetch and print a service's health; the exit code is 0, 1, 2 by status, 3 unreachable."""
    try:
        document = fetch_health(url, timeout)
    except Unreachable as exc:
        errors.paragraph(f"unreachable: {exc}", "bold red", indent="  ")
        return EXIT_UNREACHABLE
    if as_json:
        out.line(json.dumps(document, indent=2, sort_keys=False))
    else:
        render(document, out)
    return EXIT_CODES[document["status"]]
