"""Config loading: YAML, TOML, JSON and dicts; every kind of bad input is a clear error."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from otel_resilience import ConfigError, Criticality, Registry, load_config

DESIGN_EXAMPLE = """\
service: chat-api
defaults:
  breaker: {failure_rate_threshold: 0.5, minimum_calls: 10, consecutive_failures: 5,
            open_seconds: 30}
dependencies:
  redis:
    criticality: optional
    match: {db.system: redis}
    fallback: none
  postgres:
    criticality: critical
    match: {db.system: postgresql}
    breaker: {consecutive_failures: 3, open_seconds: 10}
    health_check: sql
  analytics:
    criticality: optional
    match: {server.address: analytics.internal}
    fallback: "tests.fallbacks_for_tests:local_analytics"
telemetry:
  criticality: monitoring
  export_timeout_seconds: 1.0
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(config: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(config)
    return str(info.value)


def test_design_example_loads(tmp_path: Path) -> None:
    """The example of DESIGN.md 7 loads: defaults, overrides, fallbacks and telemetry."""
    registry = Registry.from_config(write(tmp_path, "resilience.yaml", DESIGN_EXAMPLE))
    assert registry.service == "chat-api"
    assert [d.name for d in registry] == ["redis", "postgres", "analytics", "telemetry"]
    postgres = registry["postgres"]
    assert postgres.criticality is Criticality.CRITICAL
    assert postgres.policy.consecutive_failures == 3
    assert postgres.policy.open_seconds == 10
    assert postgres.policy.minimum_calls == 10  # from defaults
    assert postgres.health_check == "sql"
    assert registry["redis"].fallback is not None
    assert registry["redis"].fallback() is None  # type: ignore[misc]
    from tests.fallbacks_for_tests import local_analytics

    assert registry["analytics"].fallback is local_analytics
    assert registry["telemetry"].criticality is Criticality.MONITORING
    assert registry.telemetry.export_timeout_seconds == 1.0
    assert registry.classify({"db.system": "postgresql"}) == "postgres"


def test_toml_and_json_load_the_same(tmp_path: Path) -> None:
    """TOML and JSON configs give the same registry as YAML."""
    toml = write(
        tmp_path,
        "resilience.toml",
        """
        service = "svc"
        [dependencies.redis]
        criticality = "optional"
        match = {"db.system" = "redis"}
        breaker = {open_seconds = 3}
        """,
    )
    data = {
        "service": "svc",
        "dependencies": {
            "redis": {"match": {"db.system": "redis"}, "breaker": {"open_seconds": 3}}
        },
    }
    as_json = tmp_path / "resilience.json"
    as_json.write_text(json.dumps(data))
    for path in (toml, as_json):
        registry = load_config(path)
        assert registry.service == "svc"
        assert registry["redis"].policy.open_seconds == 3
    assert load_config(data)["redis"].match == {"db.system": "redis"}


def test_none_reads_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no config, OTEL_RESILIENCE_CONFIG names the file; without it, defaults apply."""
    path = write(tmp_path, "r.yaml", "service: from-env\n")
    monkeypatch.setenv("OTEL_RESILIENCE_CONFIG", str(path))
    assert load_config(None).service == "from-env"
    monkeypatch.delenv("OTEL_RESILIENCE_CONFIG")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "svc-name")
    registry = load_config(None)
    assert registry.service == "svc-name"
    assert [d.name for d in registry] == ["telemetry"]


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    """An empty file is valid and declares nothing."""
    assert [d.name for d in load_config(write(tmp_path, "e.yaml", ""))] == ["telemetry"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"servce": "x"}, "servce: unknown key (did you mean 'service'?)"),
        (
            {"dependencies": {"r": {"fallbak": "none"}}},
            "dependencies.r.fallbak: unknown key (did you mean 'fallback'?)",
        ),
        (
            {"dependencies": {"r": {"breaker": {"open_secnds": 1}}}},
            "dependencies.r.breaker.open_secnds: unknown key (did you mean 'open_seconds'?)",
        ),
        (
            {"defaults": {"breaker": {"minimum_calls": 0}}},
            "defaults.breaker.minimum_calls: must be an integer from 1 to 1000000, got 0",
        ),
        (
            {"dependencies": {"r": {"breaker": {"open_seconds": "30s"}}}},
            "dependencies.r.breaker.open_seconds: must be a number, got '30s'",
        ),
        (
            {"dependencies": {"r": {"breaker": {"failure_rate_threshold": 2}}}},
            "dependencies.r.breaker.failure_rate_threshold: must be > 0 and <= 1, got 2",
        ),
        (
            {"dependencies": {"r": {"criticality": "vital"}}},
            "dependencies.r.criticality: must be one of critical, important, optional, monitoring",
        ),
        (
            {"dependencies": {"r": {"match": "redis"}}},
            "dependencies.r.match: must be a mapping, got string 'redis'",
        ),
        (
            {"dependencies": {"r": {"match": {"db.system": ["a"]}}}},
            "dependencies.r.match.db.system: must be a string or number",
        ),
        ({"dependencies": ["redis"]}, "dependencies: must be a mapping of names, got list"),
        (
            {"dependencies": {"r": {"fallback": "memoryy"}}},
            "dependencies.r.fallback: unknown built-in 'memoryy' (did you mean 'memory'?)",
        ),
        (
            {"dependencies": {"r": {"fallback": "no_such_module_xyz:f"}}},
            "dependencies.r.fallback: cannot import module 'no_such_module_xyz'",
        ),
        (
            {"dependencies": {"r": {"fallback": "tests.fallbacks_for_tests:missing"}}},
            "dependencies.r.fallback: module 'tests.fallbacks_for_tests' has no attribute",
        ),
        (
            {"dependencies": {"r": {"fallback": "tests.fallbacks_for_tests:NOT_CALLABLE"}}},
            "dependencies.r.fallback: fallback 'tests.fallbacks_for_tests:NOT_CALLABLE' is not",
        ),
        (
            {"dependencies": {"r": {"fallback": 3}}},
            "dependencies.r.fallback: must be a built-in name",
        ),
        (
            {"dependencies": {"db": {"criticality": "critical", "fallback": "none"}}},
            "dependencies.db.fallback: a critical dependency fails fast and has no fallback",
        ),
        (
            {"dependencies": {"r": {"business_errors": ["builtins:len"]}}},
            "dependencies.r.business_errors[0]: 'builtins:len' is not an exception class",
        ),
        (
            {"dependencies": {"r": {"health_check": 5}}},
            "dependencies.r.health_check: must be a built-in name",
        ),
        (
            {"dependencies": {"telemetry": {}}},
            "dependencies.telemetry: the name 'telemetry' is reserved",
        ),
        ({"telemetry": {"criticality": "critical"}}, "telemetry.criticality: telemetry is always"),
        (
            {"telemetry": {"export_timeout_seconds": 0}},
            "telemetry.export_timeout_seconds: must be a number of seconds from 0.01 to 300, got 0",
        ),
        ({"service": ""}, "service: must be a non-empty string"),
        ({"service": 5}, "service: must be a non-empty string, at most 200 characters, got int 5"),
    ],
)
def test_bad_configs_name_the_key_path(config: dict[str, Any], expected: str) -> None:
    """Each kind of bad input names the key path, the bad value and what is allowed."""
    assert error_of(config).startswith(expected), error_of(config)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"dependencies": {"r": {"fallback": {"type": "memory", "max_entries": 2.5}}}},
            "dependencies.r.fallback.max_entries: must be an integer, got 2.5",
        ),
        (
            {"dependencies": {"r": {"fallback": {"type": "none", "max_entries": 5}}}},
            "dependencies.r.fallback.max_entries: applies to the memory fallback only, not 'none'",
        ),
        (
            {"dependencies": {"r": {"business_errors": {"a": 1}}}},
            "dependencies.r.business_errors: must be a list of import paths, got mapping",
        ),
        (
            {"dependencies": {"r": {"match": {5: "x"}}}},
            "dependencies.r.match: keys must be attribute names, got int 5",
        ),
        (
            {"dependencies": {"r": {"match": {"server.address": "x" * 1001}}}},
            "dependencies.r.match.server.address: must be at most 1000 characters",
        ),
        (
            {"dependencies": {"": {}}},
            "dependencies: names must be non-empty strings of at most 200 characters, got "
            "string ''",
        ),
        (
            {"dependencies": {"r": {"breaker": {"open_seconds": 600, "max_open_seconds": 300}}}},
            "dependencies.r.breaker.max_open_seconds: must be >= open_seconds (600), got 300",
        ),
        (
            {"dependencies": {"r": {"breaker": {"open_seconds": 600}}}},
            "dependencies.r.breaker: max_open_seconds must be >= open_seconds (600), got 300",
        ),
        (
            {"dependencies": {"r": {"limits": {"max_concurrent_calls": 4, "min": 2}}}},
            "dependencies.r.limits.min: applies to adaptive limits only",
        ),
        (
            {"dependencies": {"r": {"limits": {"adaptive": "vegas", "min": 50, "max": 10}}}},
            "dependencies.r.limits: min must be <= max (10), got 50",
        ),
        ({"chaos": {"enabled": "yes"}}, "chaos.enabled: must be true or false, got string 'yes'"),
        (
            {"admin": {"token_env": "1BAD"}},
            "admin.token_env: must be an environment variable name, got string '1BAD'",
        ),
    ],
)
def test_more_bad_configs_name_the_key_path(config: dict[str, Any], expected: str) -> None:
    """Bad values in fallbacks, business errors, matches, names, cross-key breaker and
    limit rules, chaos and admin settings name the key path, the value and what is allowed."""
    assert error_of(config).startswith(expected), error_of(config)


def test_a_match_left_empty_matches_nothing_by_itself() -> None:
    """``match:`` with no value is an empty match, as if it were not written."""
    registry = load_config({"dependencies": {"r": {"match": None}}})
    assert registry["r"].match == {}
    assert repr(registry.telemetry) == "TelemetrySettings(export_timeout_seconds=1.0)"


def test_errors_name_the_file(tmp_path: Path) -> None:
    """A bad value in a file names the file first."""
    path = write(tmp_path, "bad.yaml", "dependencies:\n  r:\n    breaker: {open_seconds: -1}\n")
    assert (
        error_of(path)
        == f"{path}: dependencies.r.breaker.open_seconds: must be a number of seconds from "
        "0.001 to 604800, got -1"
    )


def test_unparsable_and_missing_files(tmp_path: Path) -> None:
    """Syntax errors and missing files are ConfigErrors naming the file."""
    bad_yaml = write(tmp_path, "bad.yaml", "dependencies: [unclosed\n")
    assert error_of(bad_yaml).startswith(f"{bad_yaml}: not valid yaml")
    bad_toml = write(tmp_path, "bad.toml", "x = \n")
    assert error_of(bad_toml).startswith(f"{bad_toml}: not valid toml")
    missing = tmp_path / "missing.yaml"
    assert error_of(missing) == f"{missing}: file not found"
    top_list = write(tmp_path, "list.yaml", "- a\n")
    assert re.match(rf"{re.escape(str(top_list))}: must be a mapping", error_of(top_list))


def test_business_errors_by_import_path() -> None:
    """business_errors lists exception classes by import path."""
    registry = load_config(
        {
            "dependencies": {
                "r": {
                    "business_errors": ["tests.fallbacks_for_tests:NotFound", "builtins.KeyError"]
                }
            }
        }
    )
    from tests.fallbacks_for_tests import NotFound

    assert registry["r"].business_errors == (NotFound, KeyError)


def test_wrong_config_type() -> None:
    """A config that is neither a path, a mapping nor None is a TypeError."""
    with pytest.raises(TypeError, match="config must be a path, a mapping or None, got int"):
        load_config(5)  # type: ignore[arg-type]


def test_config_errors_are_value_errors() -> None:
    """ConfigError is a ValueError, so generic handlers catch it."""
    assert issubclass(ConfigError, ValueError)
    assert sys.modules["otel_resilience"].ConfigError is ConfigError
