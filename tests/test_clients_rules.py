"""The pure parts of the client guards: identity and failure rules, without servers."""

from __future__ import annotations

import grpc
import psycopg
import psycopg2
import pytest

from otel_resilience import load_config
from otel_resilience._semconv import canonical_key
from otel_resilience.instrumentation import _postgres
from otel_resilience.instrumentation._clientcall import http_answer
from otel_resilience.instrumentation._grpc import GrpcCircuitOpenError, parse_target
from otel_resilience.instrumentation._psycopg import PsycopgCircuitOpenError
from otel_resilience.instrumentation._psycopg import _is_failure as psycopg_is_failure
from otel_resilience.instrumentation._psycopg2 import _is_failure as psycopg2_is_failure


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("localhost:50051", ("localhost", 50051)),
        ("127.0.0.1:7000", ("127.0.0.1", 7000)),
        ("dns:///api.internal:443", ("api.internal", 443)),
        ("dns://8.8.8.8/api.internal:8443", ("api.internal", 8443)),
        ("ipv4:10.0.0.1:9000,10.0.0.2:9000", ("10.0.0.1", 9000)),
        ("[::1]:50051", ("::1", 50051)),
        ("api.internal", ("api.internal", 443)),
        ("api.internal:grpc", ("api.internal", 443)),  # not a port number: the default
        ("unix:/run/app.sock", ("/run/app.sock", None)),
    ],
)
def test_grpc_channel_targets_name_their_server(
    target: str, expected: tuple[str, int | None]
) -> None:
    """A channel target gives the server address and port a grpc dependency is matched by."""
    assert parse_target(target) == expected


def test_grpc_spans_match_by_service_in_either_convention() -> None:
    """``rpc.system.name`` (newer RPC conventions) is read as ``rpc.system``."""
    registry = load_config(
        {"dependencies": {"ledger": {"match": {"rpc.system": "grpc", "rpc.service": "x.Ledger"}}}}
    )
    assert registry.classify({"rpc.system": "grpc", "rpc.service": "x.Ledger"}) == "ledger"
    assert registry.classify({"rpc.system.name": "grpc", "rpc.service": "x.Ledger"}) == "ledger"
    assert canonical_key("rpc.system.name") == "rpc.system"


def test_the_grpc_rejection_is_an_unavailable_rpc_error() -> None:
    """The rejection is a ``grpc.RpcError`` whose code is UNAVAILABLE, and pickles."""
    import pickle

    error = GrpcCircuitOpenError("ledger", 1.5)
    assert isinstance(error, grpc.RpcError)
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert "ledger" in error.details()
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.dependency, copy.retry_after) == ("ledger", 1.5)


def test_postgres_addresses_fall_back_to_libpq_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """No host or port means PGHOST/PGPORT, else localhost:5432; several hosts, the first;
    a port that is no number, 5432."""
    monkeypatch.delenv("PGHOST", raising=False)
    monkeypatch.delenv("PGPORT", raising=False)
    assert _postgres.address(None, None) == ("localhost", 5432)
    assert _postgres.address("db1,db2", "6432,6433") == ("db1", 6432)
    assert _postgres.address("db1", "postgres") == ("db1", 5432)
    monkeypatch.setenv("PGHOST", "pg.internal")
    assert _postgres.address(None, "5433") == ("pg.internal", 5433)


def test_database_answers_are_not_failures() -> None:
    """Server answers (a syntax error) are not failures; unavailability is."""
    syntax = psycopg.errors.SyntaxError("syntax error")
    assert not psycopg_is_failure(syntax)
    assert psycopg_is_failure(psycopg.OperationalError("connection refused"))
    assert psycopg_is_failure(psycopg.errors.AdminShutdown("terminating"))  # 57P01
    assert psycopg_is_failure(ConnectionResetError())
    assert not psycopg_is_failure(psycopg.ProgrammingError("wrong number of parameters"))
    assert psycopg2_is_failure(psycopg2.OperationalError("could not connect"))
    assert not psycopg2_is_failure(psycopg2.ProgrammingError("no results to fetch"))


def test_the_psycopg_rejection_is_an_operational_error() -> None:
    """``except psycopg.OperationalError`` catches a rejection."""
    error = PsycopgCircuitOpenError("db", 2.0)
    assert isinstance(error, psycopg.OperationalError)
    assert error.retry_after == 2.0


@pytest.mark.parametrize(
    ("status", "failure"), [(200, None), (404, None), (429, "429"), (503, "503"), ("x", None)]
)
def test_http_answers(status: object, failure: str | None) -> None:
    """5xx and 429 responses are failures; other statuses are the server answering."""
    assert http_answer(status) == failure
