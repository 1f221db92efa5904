"""Manual control over HTTP: the admin routes of health_app and the ``breaker`` command."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from otel_resilience import ConfigError, OperatorEvent, State, health_app, load_config
from otel_resilience._cli import main as cli_main
from tests.support.health_servers import serve_asgi

TOKEN = "s3cret-admin-token"
ENV = "TEST_RESILIENCE_ADMIN_TOKEN"


def registry_with_token(token_env: str | None = ENV) -> Any:
    config: dict[str, Any] = {
        "service": "chat-api",
        "dependencies": {"redis": {"criticality": "optional"}, "postgres": {}},
    }
    if token_env is not None:
        config["admin"] = {"token_env": token_env}
    return load_config(config)


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, TOKEN)


@pytest.mark.usefixtures("admin_env")
async def test_right_token_forces_open_disables_and_resets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the right bearer token each action moves the breaker and is logged once with
    the caller's address and never the token."""
    registry = registry_with_token()
    events: list[OperatorEvent] = []
    registry.add_event_listener(events.append)
    app = health_app(registry, probe=False)
    caplog.set_level(logging.INFO, logger="otel_resilience")
    async with client_for(app) as client:
        response = await client.post("/health/breakers/redis/force-open", headers=bearer())
        assert response.status_code == 200
        assert response.json() == {
            "dependency": "redis",
            "action": "force-open",
            "previous_state": "closed",
            "state": "forced_open",
        }
        assert registry.breaker("redis").state is State.FORCED_OPEN
        health = (await client.get("/health")).json()
        assert health["dependencies"]["redis"]["state"] == "forced_open"
        response = await client.post("/health/breakers/redis/disable", headers=bearer())
        assert response.json()["state"] == "disabled"
        response = await client.post("/health/breakers/redis/reset", headers=bearer())
        assert response.json()["state"] == "closed"
    assert registry.breaker("redis").state is State.CLOSED
    lines = [r.getMessage() for r in caplog.records if r.name == "otel_resilience._admin"]
    assert len(lines) == 3
    assert all("127.0.0.1" in line and TOKEN not in line for line in lines)
    assert "force-open" in lines[0]
    assert [(e.kind, e.detail, e.dependency) for e in events] == [
        ("manual", "force-open", "redis"),
        ("manual", "disable", "redis"),
        ("manual", "reset", "redis"),
    ]


@pytest.mark.usefixtures("admin_env")
async def test_mounted_under_health_the_short_path_works() -> None:
    """Mounted at /health (root_path), POST /health/breakers/NAME/ACTION reaches the app."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    registry = registry_with_token()
    app = Starlette(routes=[Mount("/health", app=health_app(registry, probe=False))])
    async with client_for(app) as client:
        response = await client.post("/health/breakers/postgres/force-open", headers=bearer())
    assert response.status_code == 200
    assert registry.breaker("postgres").state is State.FORCED_OPEN


@pytest.mark.usefixtures("admin_env")
async def test_wrong_or_missing_token_is_401_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No token, a wrong token, or another scheme: 401, the breaker untouched, the refusal
    logged without the presented token."""
    registry = registry_with_token()
    app = health_app(registry, probe=False)
    caplog.set_level(logging.INFO, logger="otel_resilience")
    async with client_for(app) as client:
        for headers in (
            {},
            bearer("not-the-token"),
            bearer(TOKEN + "x"),
            {"Authorization": f"Basic {TOKEN}"},
        ):
            response = await client.post("/health/breakers/redis/force-open", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert registry.breaker("redis").state is State.CLOSED
    lines = [r.getMessage() for r in caplog.records if r.name == "otel_resilience._admin"]
    assert len(lines) == 4
    assert all("refused" in line and "not-the-token" not in line for line in lines)


async def test_no_token_configured_means_no_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without admin.token_env, or with its env var unset, the routes are 404 even with
    a token, and nothing changes."""
    monkeypatch.setenv(ENV, TOKEN)
    for registry in (registry_with_token(None), registry_with_token("UNSET_ADMIN_TOKEN_VAR")):
        monkeypatch.delenv("UNSET_ADMIN_TOKEN_VAR", raising=False)
        app = health_app(registry, probe=False)
        async with client_for(app) as client:
            response = await client.post("/health/breakers/redis/force-open", headers=bearer())
        assert response.status_code == 404
        assert registry.breaker("redis").state is State.CLOSED


@pytest.mark.usefixtures("admin_env")
async def test_unknown_name_or_action_is_404() -> None:
    """An unknown dependency or action is 404 (after the token is checked); GET is 405."""
    registry = registry_with_token()
    app = health_app(registry, probe=False)
    async with client_for(app) as client:
        response = await client.post("/health/breakers/nope/force-open", headers=bearer())
        assert response.status_code == 404
        assert "nope" in response.json()["error"]
        response = await client.post("/health/breakers/redis/explode", headers=bearer())
        assert response.status_code == 404
        # Unauthenticated callers cannot probe for names.
        response = await client.post("/health/breakers/nope/force-open")
        assert response.status_code == 401
        response = await client.get("/health/breakers/redis/reset", headers=bearer())
        assert response.status_code == 405
    assert registry.breaker("redis").state is State.CLOSED


@pytest.mark.usefixtures("admin_env")
async def test_concurrent_actions_each_apply_once(caplog: pytest.LogCaptureFixture) -> None:
    """Many concurrent actions on two breakers: every one answers 200, is logged once, and
    each breaker ends in the state of an action made on it; a final reset closes both."""
    registry = registry_with_token()
    app = health_app(registry, probe=False)
    caplog.set_level(logging.INFO, logger="otel_resilience")
    actions = ["force-open", "disable", "reset"] * 10
    async with client_for(app) as client:
        responses = await asyncio.gather(
            *(
                client.post(f"/health/breakers/{name}/{action}", headers=bearer())
                for action in actions
                for name in ("redis", "postgres")
            )
        )
        assert [r.status_code for r in responses] == [200] * 60
        for name in ("redis", "postgres"):
            assert registry.breaker(name).state in {
                State.FORCED_OPEN,
                State.DISABLED,
                State.CLOSED,
            }
            await client.post(f"/health/breakers/{name}/reset", headers=bearer())
            assert registry.breaker(name).state is State.CLOSED
    lines = [r for r in caplog.records if r.name == "otel_resilience._admin"]
    assert len(lines) == 62


def test_bad_token_env_is_a_config_error() -> None:
    """admin.token_env must name an environment variable; unknown admin keys are errors."""
    with pytest.raises(ConfigError, match=r"admin\.token_env"):
        load_config({"admin": {"token_env": ""}})
    with pytest.raises(ConfigError, match=r"admin\.token"):
        load_config({"admin": {"token": "literal"}})


def test_cli_forces_open_and_resets_over_http(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`otel-resilience breaker URL NAME ACTION` reads the token from the environment and
    acts on a served app; a wrong token exits 1, a missing one 2, no server 3."""
    monkeypatch.setenv(ENV, TOKEN)
    registry = registry_with_token()
    with serve_asgi(health_app(registry, probe=False), lifespan="off") as base:
        monkeypatch.setenv("OTEL_RESILIENCE_ADMIN_TOKEN", TOKEN)
        host = base.removeprefix("http://")
        assert cli_main(["breaker", host, "redis", "force-open"]) == 0
        assert registry.breaker("redis").state is State.FORCED_OPEN
        assert "closed -> forced_open" in capsys.readouterr().out
        assert cli_main(["breaker", f"{base}/health", "redis", "reset"]) == 0
        assert registry.breaker("redis").state is State.CLOSED
        assert cli_main(["breaker", host, "nope", "reset"]) == 1
        monkeypatch.setenv("OTHER_TOKEN", "wrong")
        assert cli_main(["breaker", host, "redis", "force-open", "--token-env", "OTHER_TOKEN"]) == 1
        assert registry.breaker("redis").state is State.CLOSED
        monkeypatch.delenv("OTEL_RESILIENCE_ADMIN_TOKEN")
        assert cli_main(["breaker", host, "redis", "force-open"]) == 2
    monkeypatch.setenv("OTEL_RESILIENCE_ADMIN_TOKEN", TOKEN)
    assert cli_main(["breaker", host, "redis", "force-open", "--timeout", "2"]) == 3
