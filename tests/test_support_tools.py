"""The tests' own rule for missing tools: never a silent skip in CI, whatever CI is set to."""

from __future__ import annotations

import pytest

from tests.support.health_servers import need_tool

MISSING = "otel-resilience-no-such-tool"


@pytest.mark.parametrize("ci", ["true", "1", "yes", "TRUE", "github-actions", "on"])
def test_a_missing_tool_fails_whenever_ci_is_truthy(
    monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.delenv("OTEL_RESILIENCE_REQUIRE_TOOLS", raising=False)
    with pytest.raises(pytest.fail.Exception, match=MISSING):
        need_tool(MISSING)


@pytest.mark.parametrize("ci", [None, "", "0", "false", "no", "off", "False"])
def test_a_missing_optional_tool_skips_outside_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    monkeypatch.delenv("OTEL_RESILIENCE_REQUIRE_TOOLS", raising=False)
    with pytest.raises(pytest.skip.Exception, match=MISSING):
        need_tool(MISSING)
    monkeypatch.setenv("OTEL_RESILIENCE_REQUIRE_TOOLS", "1")  # a developer asking for all
    with pytest.raises(pytest.fail.Exception, match=MISSING):
        need_tool(MISSING)


def test_a_missing_redis_server_always_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("OTEL_RESILIENCE_REQUIRE_TOOLS", raising=False)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(pytest.fail.Exception, match="redis-server"):
        need_tool("redis-server")


def test_a_present_tool_is_found() -> None:
    assert need_tool("sh").endswith("/sh")
