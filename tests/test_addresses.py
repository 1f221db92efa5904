"""Where a dependency's calls go (DESIGN.md 7): addresses read from client span attributes
in both semantic-convention generations, and kept per dependency by the address book."""

from __future__ import annotations

import pytest

from otel_resilience._addresses import Address, AddressBook, address_from_span


def test_old_and_new_conventions_give_the_same_address() -> None:
    """``server.*`` and ``net.peer.*`` name the same host and port; a numeric string port
    counts, and the database and user come along."""
    new = address_from_span(
        {
            "db.system": "postgresql",
            "server.address": "db.internal",
            "server.port": "5432",
            "db.namespace": "orders",
            "db.user": "app",
        }
    )
    old = address_from_span(
        {
            "db.system": "postgresql",
            "net.peer.name": "db.internal",
            "net.peer.port": 5432,
            "db.name": "orders",
            "db.user": "app",
        }
    )
    assert new == old == Address("db.internal", 5432, "orders", "app")


@pytest.mark.parametrize("port", [True, 0, 70000, "http", "-1", 5.5])
def test_a_port_that_is_not_a_tcp_port_is_left_out(port: object) -> None:
    """A boolean, out-of-range or non-numeric port attribute gives an address without a
    port rather than a wrong one."""
    address = address_from_span({"server.address": "api.internal", "server.port": port})
    assert address == Address("api.internal")


def test_redis_database_index_is_not_a_database_name() -> None:
    """A Redis span's ``db.namespace`` is the database index: the address drops it."""
    address = address_from_span(
        {"db.system": "redis", "server.address": "cache", "server.port": 6380, "db.namespace": "3"}
    )
    assert address == Address("cache", 6380)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        (
            {"url.full": "https://api.example.com/v1/items?q=1"},
            Address("api.example.com", scheme="https"),
        ),
        ({"http.url": "http://10.0.0.7:8080/health"}, Address("10.0.0.7", 8080, scheme="http")),
        (
            {"url.full": "http://api.example.com/x", "server.port": 9000},
            Address("api.example.com", 9000, scheme="http"),
        ),
    ],
)
def test_http_span_without_server_address_uses_the_url_host(
    attributes: dict[str, object], expected: Address
) -> None:
    """An HTTP span without ``server.address`` (the default HTTP conventions) is addressed
    by the host, port and scheme of its ``url.full`` / ``http.url``."""
    assert address_from_span(attributes) == expected


@pytest.mark.parametrize(
    "attributes",
    [
        {},
        {"db.system": "redis"},
        {"url.full": "/relative/path"},
        {"url.full": "http://[::1/broken"},
        {"http.url": "http://host:99999/"},
    ],
)
def test_a_span_without_a_usable_host_gives_no_address(attributes: dict[str, object]) -> None:
    """No host attribute and no URL with a host (or a URL that does not parse) gives None,
    never an exception into the span processor."""
    assert address_from_span(attributes) is None


def test_a_span_keeps_what_the_guard_learned_about_the_same_server() -> None:
    """A span for the host and port a guard saw connecting keeps the guard's password and
    the database and user the span does not carry."""
    book = AddressBook()
    book.learn("postgres", Address("db", 5432, "orders", "app", None, password="s3cret"))
    book.learn("postgres", Address("db", 5432, scheme="postgresql"))
    learned = book.get("postgres")
    assert learned == Address("db", 5432, "orders", "app", "postgresql", password="s3cret")
    assert "s3cret" not in repr(learned)


def test_a_span_that_adds_nothing_leaves_the_address_as_it_is() -> None:
    """A span naming the same server with less detail than the kept address changes
    nothing (the same object stays)."""
    book = AddressBook()
    kept = Address("db", 5432, "orders", "app", password="s3cret")
    book.learn("postgres", kept)
    book.learn("postgres", Address("db", 5432))
    assert book.get("postgres") is kept


def test_another_server_replaces_the_learned_address() -> None:
    """Calls that move to another host or port are followed: the latest address wins, with
    nothing carried over from the old server."""
    book = AddressBook()
    book.learn("postgres", Address("db", 5432, "orders", "app", password="s3cret"))
    book.learn("postgres", Address("db-replica", 5432))
    assert book.get("postgres") == Address("db-replica", 5432)
    book.learn("postgres", None)
    assert book.get("postgres") == Address("db-replica", 5432)


def test_span_learner_follows_the_host_of_url_spans() -> None:
    """The span learner re-learns an HTTP dependency when its URL host changes, not on
    every new path, and a URL that does not parse is ignored without an error."""
    book = AddressBook()
    learn = book.span_learner("api")
    learn({"url.full": "http://api-a.internal:8080/items/1"})
    assert book.get("api") == Address("api-a.internal", 8080, scheme="http")
    learn({"url.full": "http://api-a.internal:8080/items/2"})
    learn({"url.full": "http://[::1/broken"})
    assert book.get("api") == Address("api-a.internal", 8080, scheme="http")
    learn({"url.full": "https://api-b.internal/items/3"})
    assert book.get("api") == Address("api-b.internal", None, scheme="https")
    learn({"server.address": "api-c.internal", "server.port": 443})
    learn({"server.address": "api-c.internal", "server.port": 443})
    assert book.get("api") == Address("api-c.internal", 443)
