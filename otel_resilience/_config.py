"""Loading ``resilience.yaml`` (or TOML, JSON, a dict) into a Registry, strictly.

Unknown keys, wrong types and out-of-range values are errors at load time that name the
file, the key path, the bad value and what is allowed. A fallback import path that does
not import fails here, not at the first outage.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ._dependency import Criticality, Dependency
from ._errors import ConfigError, did_you_mean
from ._fallbacks import import_object, resolve_fallback
from ._health_checks import parse_health_check
from ._policy import BreakerPolicy
from ._registry import Registry, TelemetrySettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "CONFIG_ENV_VAR",
    "TELEMETRY_DEPENDENCY",
    "TELEMETRY_POLICY",
    "load_config",
    "read_config_file",
]

CONFIG_ENV_VAR = "OTEL_RESILIENCE_CONFIG"
TELEMETRY_DEPENDENCY = "telemetry"

# Telemetry export protects itself quickly: one failed export opens its breaker, and a
# probe export is tried every few seconds, backing off to a minute.
TELEMETRY_POLICY = BreakerPolicy(
    consecutive_failures=1,
    minimum_calls=1,
    window_size=10,
    open_seconds=5.0,
    max_open_seconds=60.0,
)

_TOP_KEYS = ("service", "defaults", "dependencies", "telemetry", "admin")
_DEFAULTS_KEYS = ("breaker",)
_DEPENDENCY_KEYS = (
    "criticality",
    "match",
    "breaker",
    "fallback",
    "health_check",
    "business_errors",
)
_TELEMETRY_KEYS = ("criticality", "export_timeout_seconds", "breaker")
_ADMIN_KEYS = ("token_env",)
_POLICY_KEYS = BreakerPolicy.field_names()


class _Loader:
    """One walk over one config document, with the source named in every error."""

    def __init__(self, source: str | None) -> None:
        self.source = source

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(message, source=self.source, path=path or None)

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...] | None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(path, f"must be a mapping, got {_describe(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.error(path, f"keys must be strings, got {key!r}")
            if allowed is not None and key not in allowed:
                raise self.error(
                    _join(path, key),
                    f"unknown key{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}",
                )
        return dict(value)

    def policy(self, base: BreakerPolicy, overrides: Any, path: str) -> BreakerPolicy:
        values = self.mapping(overrides, path, _POLICY_KEYS)
        if not values:
            return base
        try:
            return base.replace(**values)
        except ValueError as exc:
            message = str(exc)
            field, _, rest = message.partition(" ")
            if field in _POLICY_KEYS:
                raise self.error(_join(path, field), rest) from None
            raise self.error(path, message) from None

    def dependency(self, name: str, raw: Any, defaults: BreakerPolicy) -> Dependency:
        path = _join("dependencies", name)
        values = self.mapping(raw, path, _DEPENDENCY_KEYS)
        try:
            criticality = Criticality.parse(values.get("criticality", "optional"))
        except ValueError as exc:
            raise self.error(_join(path, "criticality"), _after_field(exc)) from None
        match = self.mapping(values.get("match"), _join(path, "match"), None)
        for key, expected in match.items():
            if expected is None or isinstance(expected, (Mapping, list, tuple, bool)):
                raise self.error(
                    _join(path, "match", key),
                    f"must be a string or number, got {_describe(expected)}",
                )
        policy = self.policy(defaults, values.get("breaker"), _join(path, "breaker"))
        fallback_spec = values.get("fallback")
        if fallback_spec is not None and criticality is Criticality.CRITICAL:
            raise self.error(
                _join(path, "fallback"),
                "a critical dependency fails fast and has no fallback; make it important or "
                "optional to give it one",
            )
        try:
            fallback = resolve_fallback(fallback_spec)
        except ValueError as exc:
            raise self.error(_join(path, "fallback"), str(exc)) from None
        health_check = values.get("health_check")
        # Validated now (a bad check fails at load); kept as written, parsed again by the prober.
        parse_health_check(
            health_check, match=match, path=_join(path, "health_check"), error=self.error
        )
        business_errors = self.exception_types(values.get("business_errors"), path)
        try:
            return Dependency(
                name=name,
                criticality=criticality,
                match=match,
                policy=policy,
                fallback=fallback,
                health_check=health_check,
                business_errors=business_errors,
            )
        except ValueError as exc:
            raise self.error(path, str(exc)) from None

    def exception_types(self, raw: Any, parent: str) -> tuple[type[BaseException], ...]:
        path = _join(parent, "business_errors")
        if raw is None:
            return ()
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list):
            raise self.error(path, f"must be a list of import paths, got {_describe(raw)}")
        types: list[type[BaseException]] = []
        for index, item in enumerate(raw):
            item_path = f"{path}[{index}]"
            if not isinstance(item, str):
                raise self.error(item_path, f"must be an import path, got {_describe(item)}")
            try:
                target = import_object(item)
            except ValueError as exc:
                raise self.error(item_path, str(exc)) from None
            if not (isinstance(target, type) and issubclass(target, BaseException)):
                raise self.error(item_path, f"{item!r} is not an exception class")
            types.append(target)
        return tuple(types)

    def telemetry(self, raw: Any) -> tuple[TelemetrySettings, Dependency]:
        values = self.mapping(raw, "telemetry", _TELEMETRY_KEYS)
        criticality = values.get("criticality", "monitoring")
        if criticality != "monitoring":
            raise self.error(
                "telemetry.criticality",
                f"telemetry is always a monitoring dependency; got {criticality!r}",
            )
        timeout = values.get("export_timeout_seconds", 1.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise self.error(
                "telemetry.export_timeout_seconds",
                f"must be a number of seconds > 0, got {timeout!r}",
            )
        policy = self.policy(TELEMETRY_POLICY, values.get("breaker"), "telemetry.breaker")
        dependency = Dependency(TELEMETRY_DEPENDENCY, Criticality.MONITORING, policy=policy)
        return TelemetrySettings(export_timeout_seconds=float(timeout)), dependency

    def registry(self, document: Any, clock: Callable[[], float]) -> Registry:
        top = self.mapping(document, "", _TOP_KEYS)
        service = top.get("service")
        if service is not None and (not isinstance(service, str) or not service.strip()):
            raise self.error("service", f"must be a non-empty string, got {_describe(service)}")
        defaults_section = self.mapping(top.get("defaults"), "defaults", _DEFAULTS_KEYS)
        defaults = self.policy(BreakerPolicy(), defaults_section.get("breaker"), "defaults.breaker")
        raw_dependencies = self.mapping(top.get("dependencies"), "dependencies", None)
        dependencies = []
        for name, raw in raw_dependencies.items():
            if name == TELEMETRY_DEPENDENCY:
                raise self.error(
                    _join("dependencies", name),
                    "the name 'telemetry' is reserved for telemetry export; configure it in the "
                    "top-level 'telemetry' section",
                )
            dependencies.append(self.dependency(name, raw, defaults))
        settings, telemetry_dependency = self.telemetry(top.get("telemetry"))
        dependencies.append(telemetry_dependency)
        admin_token_env = self.admin(top.get("admin"))
        registry = Registry(
            dependencies, clock=clock, service=service, telemetry=settings, source=self.source
        )
        registry.admin_token_env = admin_token_env
        return registry

    def admin(self, raw: Any) -> str | None:
        values = self.mapping(raw, "admin", _ADMIN_KEYS)
        variable = values.get("token_env")
        if variable is None:
            return None
        if not isinstance(variable, str) or not variable.strip() or "=" in variable:
            raise self.error(
                "admin.token_env",
                f"must be the name of an environment variable, got {_describe(variable)}",
            )
        return variable.strip()


def _join(*parts: str) -> str:
    return ".".join(part for part in parts if part)


def _after_field(exc: ValueError) -> str:
    message = str(exc)
    _, _, rest = message.partition(" ")
    return rest or message


def _describe(value: Any) -> str:
    kind = {dict: "mapping", list: "list", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )
    return f"{kind} {value!r}"


def read_config_file(path: str | os.PathLike[str]) -> Any:
    """Parse a YAML, TOML or JSON file into plain data; errors name the file."""
    file = Path(path)
    source = str(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=source) from None
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"not valid {suffix.lstrip('.') or 'YAML'}: {exc}", source=source
        ) from None


def load_config(
    config: Mapping[str, Any] | str | os.PathLike[str] | None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Registry:
    """A Registry from a path, a dict, or None (then ``$OTEL_RESILIENCE_CONFIG``, else defaults)."""
    if config is None:
        env_path = os.environ.get(CONFIG_ENV_VAR)
        config = env_path if env_path else {}
    if isinstance(config, Mapping):
        return _Loader(None).registry(config, clock)
    if isinstance(config, (str, os.PathLike)):
        document = read_config_file(config)
        return _Loader(str(config)).registry(document, clock)
    raise TypeError(f"config must be a path, a mapping or None, got {type(config).__name__}")
