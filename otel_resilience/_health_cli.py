"""``otel-resilience status URL``: a service's health document as a table and an exit code."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rich import box
from rich.console import Console
from rich.table import Table

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


def render(document: dict[str, Any], console: Console) -> None:
    """Print the health document as a rich table."""
    status = document["status"]
    title = (
        f"{document.get('service', '?')}: [{_STYLES[status]}]{status}[/] "
        f"at {document.get('checked_at', '?')}"
    )
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("dependency", "criticality", "state"):
        table.add_column(column, no_wrap=True)
    table.add_column("healthy")
    table.add_column("failure rate", justify="right", min_width=5)
    table.add_column("retry after", justify="right", min_width=6)
    table.add_column("last error", overflow="fold", min_width=10)
    dependencies = document.get("dependencies") or {}
    for name, entry in dependencies.items():
        if not isinstance(entry, dict):
            continue
        healthy = entry.get("healthy")
        mark = "[green]yes[/]" if healthy else "[red]no[/]"
        if healthy and entry.get("slow"):
            mark = "[yellow]slow[/]"
        criticality = str(entry.get("criticality", "?"))
        if entry.get("observe_only"):
            criticality += " (observed)"
        rate = entry.get("failure_rate")
        error = entry.get("last_error_type") or "-"
        check = entry.get("health_check")
        if isinstance(check, dict) and check.get("passing") is False and check.get("error"):
            error = f"check: {check['error']}"
        elif isinstance(check, dict) and check.get("status") == "unknown" and error == "-":
            error = "check: unknown (no address yet)"
        table.add_row(
            str(name),
            criticality,
            str(entry.get("state", "?")),
            mark,
            _number(rate * 100 if isinstance(rate, (int, float)) else None, "%"),
            _number(entry.get("retry_after_seconds"), "s"),
            error,
            style=None if healthy else "red",
        )
    console.print(table)


def show_status(url: str, console: Console, *, timeout: float = 5.0, as_json: bool = False) -> int:
    """Fetch and print a service's health; the exit code is 0, 1, 2 by status, 3 unreachable."""
    try:
        document = fetch_health(url, timeout)
    except Unreachable as exc:
        Console(stderr=True).print(f"[bold red]unreachable[/]: {exc}", highlight=False)
        return EXIT_UNREACHABLE
    if as_json:
        console.print_json(data=document)
    else:
        render(document, console)
    return EXIT_CODES[document["status"]]
