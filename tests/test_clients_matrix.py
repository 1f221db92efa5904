"""The conformance matrix of docs/clients.md is what the clients actually do.

For every client the test makes real calls (one that succeeds, one that fails at a real
server) in both semantic-convention modes, and checks the matrix row: which of the
attributes classification reads the spans carry in each mode, and which error a
rejected call raises. The rows are parsed from the docs page, so a changed
instrumentation or guard that the docs do not follow fails here.
"""

from __future__ import annotations

import contextlib
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind
from packaging.version import Version

from otel_resilience.instrumentation import CLIENTS
from tests.clients_cases import CASES, Case
from tests.test_clients_outage import global_provider, make_fail, semconv, server_for

DOCS = Path(__file__).resolve().parent.parent / "docs" / "clients.md"

# The span attributes that identify a dependency or say how a call went.
IDENTITY_KEYS = frozenset(
    {
        "db.system",
        "db.system.name",
        "net.peer.name",
        "net.peer.port",
        "server.address",
        "server.port",
        "http.url",
        "url.full",
        "http.status_code",
        "http.response.status_code",
        "error.type",
        "rpc.system",
        "rpc.service",
        "rpc.grpc.status_code",
    }
)


def matrix() -> dict[str, list[str]]:
    """The rows of the conformance matrix: client -> its cells."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Conformance matrix", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith(("| client", "|---")):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def keys_in(cell: str) -> set[str]:
    return {key for key in re.findall(r"`([a-z_.]+)`", cell) if key in IDENTITY_KEYS}


# A stable-mode cell's note for instrumentation releases that still emit the old names.
BEFORE = re.compile(
    r"\(before (opentelemetry-instrumentation-[a-z-]+) (\S+): as the default mode\)"
)


def expected_stable(client: str, row: list[str]) -> set[str]:
    """The stable-mode cell's keys, or the default cell's where the cell notes that the
    installed instrumentation is older than the release that emits the stable names."""
    note = BEFORE.search(row[2])
    if note is None:
        return keys_in(row[2])
    distribution, release = note.groups()
    instrumentations = {
        "opentelemetry-instrumentation-" + name.split(":")[0].replace("_", "-")
        for library, _, _, names in CLIENTS
        if library == client
        for name in names
    }
    assert distribution in instrumentations, f"the note names {distribution}, not {client}'s"
    if Version(version(distribution)) < Version(release):
        return keys_in(row[1])
    return keys_in(BEFORE.sub("", row[2]))


class Collect(SpanProcessor):
    def __init__(self) -> None:
        self.on = False
        self.keys: set[str] = set()
        self.scope: str | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if not self.on or span.kind is not SpanKind.CLIENT:
            return
        scope = span.instrumentation_scope.name if span.instrumentation_scope else ""
        if self.scope is None or scope.endswith(self.scope):
            self.keys |= set(span.attributes or {}) & IDENTITY_KEYS


@pytest.fixture(scope="module")
def collect() -> Any:
    collector = Collect()
    global_provider().add_span_processor(collector)
    yield collector
    collector.on = False


def observed(case: Case, mode: str, collect: Collect) -> set[str]:
    """The identity attributes on the client's spans: one good call, one failing call."""
    collect.keys = set()
    collect.scope = "sqlalchemy" if case.client == "sqlalchemy" else None
    with semconv(mode), server_for(case) as server:
        instrumentors = case.instrumentors()
        for instrumentor in instrumentors:
            instrumentor.instrument(tracer_provider=global_provider())
        caller = case.caller(server)
        try:
            collect.on = True
            caller.reconnect = False
            caller.prime(1)
            caller.call()
            make_fail(server, case.failures[-1])
            with contextlib.suppress(Exception):
                caller.call()
        finally:
            collect.on = False
            with contextlib.suppress(Exception):
                caller.close()
            for instrumentor in instrumentors:
                instrumentor.uninstrument()
    return collect.keys


# One case per row: the first of each client (the others are the same instrumentation).
ROW_CASES = {case.client: case for case in reversed(CASES)}


@pytest.mark.parametrize("client", sorted(ROW_CASES))
def test_the_matrix_names_the_attributes_the_spans_carry(client: str, collect: Collect) -> None:
    """Each mode's cell lists exactly the identity attributes the client's spans carry."""
    row = matrix()[client]
    case = ROW_CASES[client]
    assert keys_in(row[1]) == observed(case, "spans", collect), "default mode"
    assert expected_stable(client, row) == observed(case, "spans-stable", collect), (
        "database,http mode"
    )


@pytest.mark.parametrize("client", sorted(ROW_CASES))
def test_the_matrix_names_the_error_a_rejected_call_raises(client: str) -> None:
    """The last cell names the client's error classes that the outage tests check."""
    row = matrix()[client]
    for name in ROW_CASES[client].rejected.split():
        assert f"`{name}`" in row[-1], f"{name} missing from the matrix row of {client}"


def test_every_client_has_a_row() -> None:
    """The matrix has a row for every client the guards support, and no other."""
    assert set(matrix()) == set(ROW_CASES)
    libraries = {library for library, _, _, _ in CLIENTS}
    assert libraries == {"redis", "asyncpg", "httpx", "psycopg", "psycopg2", "sqlalchemy"} | {
        "requests",
        "urllib3",
        "aiohttp",
        "grpc",
    }
