"""Loading ``resilience.yaml`` (or TOML, JSON, a dict) into a Registry, strictly.

One validation path, driven by one table of keys (``KEYS``): each row gives a key path,
the kind of value it takes (type and range), its default and one line of meaning. The
same table generates docs/configuration.md, so the reference cannot drift from what is
checked. Every problem becomes a ``ConfigError`` naming the file, the key path and what
is allowed, all problems of a document at once; nothing in a config can make loading
raise anything else, hang, or take more than about a second (the file size, nesting and
every number are bounded; imports of user modules are contained).
"""

from __future__ import annotations

import json
import math
import os
import re
import reprlib
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from ._chaos import ChaosSettings, FaultSpec
from ._dependency import Criticality, Dependency
from ._errors import ConfigError, did_you_mean
from ._fallbacks import BUILTIN_FALLBACKS, check_import_path, import_object, resolve_fallback
from ._health_checks import BUILTIN_CHECKS, parse_health_check
from ._limits import LimitPolicy
from ._policy import POLICY_FIELDS, BreakerPolicy, PolicyField, format_number
from ._redact import redact
from ._retry_budget import RetryBudgetPolicy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "CONFIG_ENV_VAR",
    "KEYS",
    "MAX_CONFIG_BYTES",
    "MAX_NESTING",
    "TELEMETRY_DEPENDENCY",
    "TELEMETRY_POLICY",
    "Key",
    "LoadedConfig",
    "TelemetrySettings",
    "config_reference",
    "config_warnings",
    "parse_config",
    "read_config_file",
]

CONFIG_ENV_VAR = "OTEL_RESILIENCE_CONFIG"
TELEMETRY_DEPENDENCY = "telemetry"
MAX_CONFIG_BYTES = 1 << 20
"""A config file larger than this (1 MiB) is refused before it is parsed."""
MAX_NESTING = 32
"""Mappings and lists nested deeper than this are refused before they are built."""
_MAX_NAME = 200

# Telemetry export protects itself quickly: one failed export opens its breaker, and a
# probe export is tried every few seconds, backing off to a minute.
TELEMETRY_POLICY = BreakerPolicy(
    consecutive_failures=1,
    minimum_calls=1,
    window_size=10,
    open_seconds=5.0,
    max_open_seconds=60.0,
)

_short_repr = reprlib.Repr()
_short_repr.maxstring = 60
_short_repr.maxother = 60
_short_repr.maxlevel = 2


def _describe(value: Any) -> str:
    kind = {dict: "mapping", list: "list", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )
    # redacted: a value may be a DSN or a token, and errors reach logs and /health
    return f"{kind} {redact(_short_repr.repr(value))}"


class _Invalid(Exception):
    """A value does not fit its key; the message says what is allowed. ``below`` names a
    part of the value (a match attribute) when the problem is there."""

    def __init__(self, message: str, below: str = "") -> None:
        super().__init__(message)
        self.below = below


# -- kinds of values -----------------------------------------------------------------------


class Kind:
    """What a key takes: ``type`` and ``allowed`` for the docs, ``check`` to validate."""

    type = "any"

    def allowed(self) -> str:
        return ""

    def check(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class Text(Kind):
    type = "string"
    pattern: str | None = None
    what: str = "a non-empty string"
    max_length: int = _MAX_NAME

    def allowed(self) -> str:
        return f"{self.what}, at most {self.max_length} characters"

    def check(self, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip() or len(value) > self.max_length:
            raise _Invalid(f"must be {self.allowed()}, got {_describe(value)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise _Invalid(f"must be {self.what}, got {_describe(value)}")
        return value


_ENV_NAME = Text(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable name")


@dataclass(frozen=True)
class Flag(Kind):
    type = "boolean"

    def allowed(self) -> str:
        return "true or false"

    def check(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise _Invalid(f"must be true or false, got {_describe(value)}")
        return value


@dataclass(frozen=True)
class Number(Kind):
    """An integer or a number from ``low`` to ``high``."""

    low: float
    high: float
    integer: bool = False
    seconds: bool = False

    @property
    def type(self) -> str:  # type: ignore[override]
        return "integer" if self.integer else "number"

    def allowed(self) -> str:
        what = "an integer" if self.integer else "a number of seconds" if self.seconds else ""
        return f"{what} from {format_number(self.low)} to {format_number(self.high)}".strip()

    def check(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(
                f"must be {'an integer' if self.integer else 'a number'}, got {_describe(value)}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise _Invalid(f"must be finite ({self.allowed()}), got {value!r}")
        if self.integer and isinstance(value, float) and not value.is_integer():
            raise _Invalid(f"must be an integer, got {value!r}")
        if not self.low <= value <= self.high:
            raise _Invalid(f"must be {self.allowed()}, got {_short_repr.repr(value)}")
        return int(value) if self.integer else value


@dataclass(frozen=True)
class Policy(Kind):
    """One breaker policy field, checked by the policy's own table (``POLICY_FIELDS``)."""

    field: PolicyField

    @property
    def type(self) -> str:  # type: ignore[override]
        return {"rate": "number", "count": "integer", "seconds": "number"}[self.field.kind]

    def allowed(self) -> str:
        return self.field.allowed

    def check(self, value: Any) -> Any:
        try:
            return self.field.check(value)
        except ValueError as exc:
            raise _Invalid(str(exc).partition(" ")[2]) from None


@dataclass(frozen=True)
class Choice(Kind):
    type = "string"
    values: tuple[str, ...] = ()
    message: str | None = None

    def allowed(self) -> str:
        return "one of " + ", ".join(self.values)

    def check(self, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in self.values:
            return value.strip().lower()
        raise _Invalid(f"{self.message or 'must be ' + self.allowed()}, got {_describe(value)}")


@dataclass(frozen=True)
class Target(Kind):
    """A built-in name or an import path ``package.module:name`` (imported later)."""

    type = "string"
    builtins: tuple[str, ...] = ()

    def allowed(self) -> str:
        names = ", ".join(self.builtins)
        return f"{names}, or an import path 'package.module:name'"

    def check(self, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise _Invalid(f"must be {self.allowed()}, got {_describe(value)}")
        if value in self.builtins:
            return value
        if ":" not in value and "." not in value:
            raise _Invalid(
                f"unknown built-in {value!r}{did_you_mean(value, self.builtins)}; "
                f"allowed: {self.allowed()}"
            )
        try:
            check_import_path(value)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        return value


@dataclass(frozen=True)
class ImportPaths(Kind):
    type = "list of strings"

    def allowed(self) -> str:
        return "import paths 'package.module:ExceptionClass' (one, or a list)"

    def check(self, value: Any) -> Any:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or len(items) > 100:
            raise _Invalid(f"must be a list of import paths, got {_describe(value)}")
        problems = []
        for index, item in enumerate(items):
            try:
                if not isinstance(item, str):
                    raise ValueError(f"must be an import path, got {_describe(item)}")
                check_import_path(item)
            except ValueError as exc:
                problems.append(f"[{index}]: {exc}")
        if problems:
            raise _Invalid("; ".join(problems))
        return list(items)


@dataclass(frozen=True)
class Attributes(Kind):
    type = "mapping"

    def allowed(self) -> str:
        return "span attribute: string or number"

    def check(self, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise _Invalid(f"must be a mapping, got {_describe(value)}")
        for key, expected in value.items():
            if not isinstance(key, str) or not key or len(key) > _MAX_NAME:
                raise _Invalid(f"keys must be attribute names, got {_describe(key)}")
            if (
                expected is None
                or isinstance(expected, bool)
                or not isinstance(expected, (str, int, float))
            ):
                raise _Invalid(f"must be a string or number, got {_describe(expected)}", key)
            if isinstance(expected, str) and len(expected) > 1000:
                raise _Invalid("must be at most 1000 characters", key)
        return dict(value)


@dataclass(frozen=True)
class Section(Kind):
    """A mapping of the keys listed under it. ``short``: a plain string stands for
    ``{short: string}``. ``fill``: absent keys take their defaults. ``optional``: an
    absent section is null rather than its defaults."""

    type = "mapping"
    short: str | None = None
    what: str = "a mapping"
    fill: bool = True
    optional: bool = False
    group: str | None = None

    def allowed(self) -> str:
        return self.what


@dataclass(frozen=True)
class Names(Kind):
    """A mapping from names the user chooses to sections of the keys under ``<name>``."""

    type = "mapping"

    def allowed(self) -> str:
        return f"names of at most {_MAX_NAME} characters"


# -- the table -----------------------------------------------------------------------------

REQUIRED = object()
"""The default of a key that must be given (when its section is)."""


@dataclass(frozen=True)
class Key:
    """One row of the config reference: the key path (``<name>`` for a name the user
    chooses, ``<breaker>`` for the breaker policy keys), its kind, default and meaning."""

    path: str
    kind: Kind
    default: Any = None
    doc: str = ""


_PERCENT = Number(0, 1)
_BREAKER_DOC = "Breaker policy (the `<breaker>` keys below)"

KEYS: tuple[Key, ...] = (
    Key("service", Text(), None, "Service name in /health; default $OTEL_SERVICE_NAME."),
    Key("defaults", Section(), None, "Settings every dependency starts from."),
    Key("defaults.breaker", Section(group="<breaker>", fill=False), None, _BREAKER_DOC + "."),
    Key("dependencies", Names(), None, "The dependencies of the service, by name."),
    Key("dependencies.<name>", Section(), None, "One dependency."),
    Key(
        "dependencies.<name>.criticality",
        Choice(values=tuple(c.value for c in Criticality)),
        "optional",
        "critical down: unhealthy; important or optional down: degraded; monitoring: reported.",
    ),
    Key(
        "dependencies.<name>.match",
        Attributes(),
        None,
        "Client span attributes that must all hold for a call to belong to it.",
    ),
    Key(
        "dependencies.<name>.breaker",
        Section(group="<breaker>", fill=False),
        None,
        _BREAKER_DOC + ", over defaults.breaker.",
    ),
    Key(
        "dependencies.<name>.fallback",
        Section(
            short="type",
            optional=True,
            what="a built-in name (memory, none), an import path 'module:name', or a mapping "
            "with a 'type'",
        ),
        None,
        "What a call gets while the breaker is open or the call fails (not for critical).",
    ),
    Key(
        "dependencies.<name>.fallback.type",
        Target(builtins=tuple(BUILTIN_FALLBACKS)),
        REQUIRED,
        "memory: in-process cache standing in for Redis; none: returns None; or a callable.",
    ),
    Key(
        "dependencies.<name>.fallback.max_entries",
        Number(1, 10_000_000, integer=True),
        10_000,
        "memory: keys kept; the least recently used go first.",
    ),
    Key(
        "dependencies.<name>.fallback.max_bytes",
        Number(1024, 1 << 34, integer=True),
        64 << 20,
        "memory: bytes of keys and values kept; the least recently used go first.",
    ),
    Key(
        "dependencies.<name>.fallback.ttl_seconds",
        Number(0.001, 86_400, seconds=True),
        300.0,
        "memory: no entry is served older than this.",
    ),
    Key(
        "dependencies.<name>.fallback.replay_writes",
        Flag(),
        False,
        "memory: writes made while open are replayed to Redis, in order, once it closes.",
    ),
    Key(
        "dependencies.<name>.fallback.max_replay_writes",
        Number(1, 1_000_000, integer=True),
        10_000,
        "memory: writes the replay journal holds; further writes are dropped and counted.",
    ),
    Key(
        "dependencies.<name>.health_check",
        Section(
            short="type",
            fill=False,
            optional=True,
            what="a built-in name (redis, sql, http), an import path 'module:function', or a "
            "mapping with a 'type'",
        ),
        None,
        "An active check of the dependency, run in the background.",
    ),
    Key(
        "dependencies.<name>.health_check.type",
        Target(builtins=BUILTIN_CHECKS),
        REQUIRED,
        "redis: PING; sql: SELECT 1; http: GET; or an import path of a check function.",
    ),
    Key(
        "dependencies.<name>.health_check.url",
        Text(what="a URL", max_length=4096),
        None,
        "redis and http: the address; default: the one the dependency's calls use.",
    ),
    Key(
        "dependencies.<name>.health_check.dsn",
        Text(what="a DSN", max_length=4096),
        None,
        "sql: the DSN.",
    ),
    Key(
        "dependencies.<name>.health_check.url_env",
        _ENV_NAME,
        None,
        "redis and http: environment variable holding the URL.",
    ),
    Key(
        "dependencies.<name>.health_check.dsn_env",
        _ENV_NAME,
        None,
        "sql: environment variable holding the DSN.",
    ),
    Key(
        "dependencies.<name>.health_check.timeout_seconds",
        Number(0.01, 3600, seconds=True),
        2.0,
        "A run taking longer fails.",
    ),
    Key(
        "dependencies.<name>.health_check.interval_seconds",
        Number(0.1, 86_400, seconds=True),
        None,
        "Time between runs; null: the prober's interval.",
    ),
    Key(
        "dependencies.<name>.business_errors",
        ImportPaths(),
        None,
        "Exception classes that mean the dependency answered: counted as successes.",
    ),
    Key(
        "dependencies.<name>.retry_budget",
        Section(optional=True),
        None,
        "Retries allowed by registry.retry_allowed and retry_on, tied to the breaker.",
    ),
    Key(
        "dependencies.<name>.retry_budget.percent",
        _PERCENT,
        0.2,
        "Retries allowed as a fraction of calls.",
    ),
    Key(
        "dependencies.<name>.retry_budget.min_per_second",
        Number(0, 10_000),
        10,
        "Retries allowed per second whatever the traffic.",
    ),
    Key(
        "dependencies.<name>.retry_budget.ttl_seconds",
        Number(1, 60, seconds=True),
        10.0,
        "How long a deposited call counts toward the budget.",
    ),
    Key(
        "dependencies.<name>.limits",
        Section(optional=True, fill=False),
        None,
        "Concurrency limit: max_concurrent_calls, or adaptive with min, max, initial.",
    ),
    Key(
        "dependencies.<name>.limits.max_concurrent_calls",
        Number(1, 100_000, integer=True),
        None,
        "Static limit of calls in flight; more are rejected (or get the fallback).",
    ),
    Key(
        "dependencies.<name>.limits.adaptive",
        Choice(values=("gradient2", "vegas")),
        None,
        "The limit follows measured latency with this algorithm.",
    ),
    Key(
        "dependencies.<name>.limits.min",
        Number(1, 100_000, integer=True),
        1,
        "adaptive: lowest limit.",
    ),
    Key(
        "dependencies.<name>.limits.max",
        Number(1, 100_000, integer=True),
        200,
        "adaptive: highest limit.",
    ),
    Key(
        "dependencies.<name>.limits.initial",
        Number(1, 100_000, integer=True),
        20,
        "adaptive: starting limit, from min to max.",
    ),
    Key("telemetry", Section(), None, "How telemetry export protects itself."),
    Key(
        "telemetry.criticality",
        Choice(
            values=("monitoring",),
            message="telemetry is always a monitoring dependency",
        ),
        "monitoring",
        "Always monitoring: never changes the service's health.",
    ),
    Key(
        "telemetry.export_timeout_seconds",
        Number(0.01, 300, seconds=True),
        1.0,
        "No export, flush or shutdown waits longer.",
    ),
    Key(
        "telemetry.breaker",
        Section(group="<breaker>", fill=False),
        None,
        _BREAKER_DOC + "; default: opens on one failure, probes every 5 s up to 60 s.",
    ),
    Key(
        "chaos",
        Section(),
        None,
        "Fault drills; they act only when enabled and OTEL_RESILIENCE_CHAOS=1 is set.",
    ),
    Key("chaos.enabled", Flag(), False, "Switches the drills on (with the variable)."),
    Key("chaos.dependencies", Names(), None, "Faults to inject, by dependency name."),
    Key("chaos.dependencies.<name>", Section(), None, "Faults for one dependency."),
    Key(
        "chaos.dependencies.<name>.error_rate",
        _PERCENT,
        0.0,
        "Fraction of calls failing with the client's connection error before any I/O.",
    ),
    Key(
        "chaos.dependencies.<name>.latency_seconds",
        Number(0, 60, seconds=True),
        0.0,
        "Delay added before a delayed call.",
    ),
    Key(
        "chaos.dependencies.<name>.latency_rate",
        _PERCENT,
        1.0,
        "Fraction of calls delayed by latency_seconds.",
    ),
    Key("admin", Section(), None, "Manual breaker control over HTTP on health_app."),
    Key(
        "admin.token_env",
        _ENV_NAME,
        None,
        "Environment variable holding the bearer token; unset: no admin routes.",
    ),
    *(
        Key(f"<breaker>.{f.name}", Policy(f), getattr(BreakerPolicy(), f.name), f.doc)
        for f in POLICY_FIELDS
    ),
)


@dataclass
class _Node:
    key: Key
    children: dict[str, _Node] = field(default_factory=dict)


def _tree(keys: tuple[Key, ...]) -> dict[str, _Node]:
    """The rows as trees: one rooted at the document, one at ``<breaker>``."""
    roots = {
        "": _Node(Key("", Section())),
        "<breaker>": _Node(Key("<breaker>", Section(fill=False))),
    }
    nodes: dict[str, _Node] = dict(roots)
    for key in keys:
        parent, _, last = key.path.rpartition(".")
        node = _Node(key)
        nodes[key.path] = node
        nodes[parent].children[last] = node
    for node in nodes.values():
        kind = node.key.kind
        if isinstance(kind, Section) and kind.group is not None:
            node.children = roots[kind.group].children
    return roots


_ROOTS = _tree(KEYS)
_BAD = object()


# -- validation ----------------------------------------------------------------------------


class _Validator:
    """One walk over one document: every problem is kept, with the source named."""

    def __init__(self, source: str | None) -> None:
        self.source = source
        self.errors: list[ConfigError] = []

    def error(self, path: str, message: str) -> ConfigError:
        # One line each, whatever a key holds: control characters and line separators
        # (which str.splitlines() honours) are shown escaped.
        return ConfigError(
            _printable(" ".join(message.split())),
            source=self.source,
            path=_printable(path) or None,
        )

    def report(self, path: str, message: str) -> None:
        self.errors.append(self.error(path, message))

    def walk(self, value: Any, node: _Node, path: str) -> Any:
        kind = node.key.kind
        if isinstance(kind, Names):
            return self._names(value, node, path)
        if isinstance(kind, Section):
            return self._section(value, node, path)
        try:
            return kind.check(value)
        except _Invalid as exc:
            self.report(_join(path, exc.below), str(exc))
            return _BAD

    def _names(self, value: Any, node: _Node, path: str) -> Any:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.report(path, f"must be a mapping of names, got {_describe(value)}")
            return _BAD
        entry = node.children["<name>"]
        out: dict[str, Any] = {}
        for name, item in value.items():
            if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME:
                self.report(
                    path,
                    f"names must be non-empty strings of at most {_MAX_NAME} "
                    f"characters, got {_describe(name)}",
                )
                continue
            out[name] = self.walk(item, entry, f"{path}.{name}")
        return out

    def _section(self, value: Any, node: _Node, path: str) -> Any:
        kind = node.key.kind
        assert isinstance(kind, Section)
        if value is None:
            if kind.optional:
                return None
            value = {}
        short_form = isinstance(value, str) and kind.short is not None
        if short_form:
            value = {kind.short: value}
        elif not isinstance(value, Mapping):
            self.report(path, f"must be {kind.allowed()}, got {_describe(value)}")
            return _BAD
        children = node.children
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                self.report(path, f"keys must be strings, got {_describe(key)}")
                continue
            child = children.get(key)
            if child is None:
                self.report(
                    _join(path, key),
                    f"unknown key{did_you_mean(key, children)}; allowed: {', '.join(children)}",
                )
                continue
            # The short form's errors name the key as written, not the "type" inside it.
            out[key] = self.walk(item, child, path if short_form else _join(path, key))
        for key, child in children.items():
            if key in out:
                continue
            default = child.key.default
            if default is REQUIRED:
                self.report(_join(path, key), "is required")
                out[key] = _BAD
            elif isinstance(child.key.kind, (Section, Names)):
                if kind.fill:
                    out[key] = self.walk(None, child, _join(path, key))
            elif kind.fill:
                out[key] = default
        return out


def _printable(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _join(*parts: str) -> str:
    return ".".join(part for part in parts if part)


def _clean(values: Any) -> bool:
    """Whether a validated section holds no bad value (so it can be built on)."""
    if values is _BAD:
        return False
    if isinstance(values, dict):
        return all(_clean(v) for v in values.values())
    return True


def _walk_document(validator: _Validator, document: Any) -> Any:
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise validator.error("", f"must be a mapping, got {_describe(document)}")
    return validator.walk(document, _ROOTS[""], "")


class TelemetrySettings:
    """The ``telemetry:`` section of a config: how telemetry export protects itself."""

    __slots__ = ("export_timeout_seconds",)

    def __init__(self, export_timeout_seconds: float = 1.0) -> None:
        self.export_timeout_seconds = export_timeout_seconds

    def __repr__(self) -> str:
        return f"TelemetrySettings(export_timeout_seconds={self.export_timeout_seconds!r})"


class LoadedConfig(NamedTuple):
    """A validated config, ready to become a Registry (``_registry.load_config``)."""

    dependencies: list[Dependency]
    service: Any
    telemetry: TelemetrySettings
    source: str | None
    chaos: ChaosSettings | None
    admin_token_env: str | None


class _Builder:
    """From a validated document to a LoadedConfig, with imports and cross-key rules."""

    def __init__(self, validator: _Validator, raw: Mapping[str, Any]) -> None:
        self.v = validator
        self.raw = raw

    def policy(self, base: BreakerPolicy, values: Any, path: str) -> BreakerPolicy | None:
        if not values:
            return base
        if not _clean(values):
            return None
        try:
            return base.replace(**values)
        except ValueError as exc:
            name, _, rest = str(exc).partition(" ")
            if name in values:
                self.v.report(_join(path, name), rest)
            else:
                self.v.report(path, str(exc))
            return None

    def fallback(self, values: dict[str, Any], path: str, critical: bool) -> Any:
        if values is None or values is _BAD:
            return None
        if critical:
            self.v.report(
                path,
                "a critical dependency fails fast and has no fallback; make it important or "
                "optional to give it one",
            )
            return None
        kind = values.get("type")
        if kind is _BAD:
            return None
        raw = self.raw_at(path)
        if kind != "memory" and isinstance(raw, Mapping):
            extra = [key for key in raw if key != "type"]
            if extra:
                self.v.report(
                    _join(path, extra[0]), f"applies to the memory fallback only, not {kind!r}"
                )
                return None
        if kind == "memory":
            if not _clean(values):
                return None
            from ._memory_cache import MemoryCache

            return MemoryCache(
                max_entries=values["max_entries"],
                default_ttl_seconds=values["ttl_seconds"],
                max_bytes=values["max_bytes"],
                replay_writes=values["replay_writes"],
                max_replay_writes=values["max_replay_writes"],
            )
        try:
            return resolve_fallback(kind)
        except ValueError as exc:
            self.v.report(_join(path, "type") if isinstance(raw, Mapping) else path, str(exc))
            return None

    def raw_at(self, path: str) -> Any:
        """The value as written at ``path`` (names may contain dots: walk by known parts)."""
        node: Any = self.raw
        parts = path.split(".")
        if parts[0] == "dependencies" and len(parts) > 2:
            name = ".".join(parts[1:-1])
            node = (node.get("dependencies") or {}).get(name) or {}
            return node.get(parts[-1]) if isinstance(node, Mapping) else None
        for part in parts:
            node = node.get(part) if isinstance(node, Mapping) else None
        return node

    def exception_types(self, paths: Any, path: str) -> tuple[type[BaseException], ...]:
        if not paths or paths is _BAD:
            return ()
        types: list[type[BaseException]] = []
        for index, item in enumerate(paths):
            item_path = f"{path}[{index}]"
            try:
                target = import_object(item)
            except ValueError as exc:
                self.v.report(item_path, str(exc))
                continue
            if not (isinstance(target, type) and issubclass(target, BaseException)):
                self.v.report(item_path, f"{item!r} is not an exception class")
                continue
            types.append(target)
        return tuple(types)

    def limits(self, values: Any, path: str) -> LimitPolicy | None:
        if values is None or not _clean(values):
            return None
        if ("max_concurrent_calls" in values) == ("adaptive" in values):
            self.v.report(
                path, "give either max_concurrent_calls or adaptive (with min, max, initial)"
            )
            return None
        if "max_concurrent_calls" in values:
            extra = [k for k in values if k != "max_concurrent_calls"]
            if extra:
                self.v.report(_join(path, extra[0]), "applies to adaptive limits only")
                return None
        try:
            return LimitPolicy(**values)
        except ValueError as exc:  # a rule across keys (min <= initial <= max)
            self.v.report(path, str(exc))
            return None

    def retry_budget(self, values: Any, path: str) -> RetryBudgetPolicy | None:
        if values is None or not _clean(values):
            return None
        try:
            return RetryBudgetPolicy(**values)
        except ValueError as exc:
            self.v.report(path, str(exc))
            return None

    def chaos(self, values: Any, declared: Mapping[str, Any]) -> ChaosSettings | None:
        if not _clean(values):
            return None
        faults: dict[str, FaultSpec] = {}
        for name, spec in values["dependencies"].items():
            if name not in declared:
                self.v.report(
                    f"chaos.dependencies.{name}",
                    f"is not a declared dependency{did_you_mean(name, declared)}",
                )
                continue
            try:
                faults[name] = FaultSpec(**spec)
            except ValueError as exc:
                self.v.report(f"chaos.dependencies.{name}", str(exc))
        return ChaosSettings(enabled=values["enabled"], dependencies=faults)

    def dependency(
        self, name: str, values: Any, defaults: BreakerPolicy | None
    ) -> Dependency | None:
        path = f"dependencies.{name}"
        if values is _BAD:
            return None
        if name == TELEMETRY_DEPENDENCY:
            self.v.report(
                path,
                "the name 'telemetry' is reserved for telemetry export; configure it in the "
                "top-level 'telemetry' section",
            )
            return None
        criticality = values["criticality"]
        policy = (
            self.policy(defaults, values.get("breaker"), f"{path}.breaker")
            if defaults is not None
            else None
        )
        fallback = self.fallback(
            values["fallback"], f"{path}.fallback", criticality == Criticality.CRITICAL.value
        )
        match = values["match"] or {}
        health_check = self.raw_at(f"{path}.health_check")
        if values["health_check"] is not None and _clean(values["health_check"]) and _clean(match):
            try:
                parse_health_check(
                    health_check, match=match, path=f"{path}.health_check", error=self.v.error
                )
            except ConfigError as exc:
                self.v.errors.append(exc)
        business_errors = self.exception_types(values["business_errors"], f"{path}.business_errors")
        limits = self.limits(values.get("limits"), f"{path}.limits")
        retry_budget = self.retry_budget(values.get("retry_budget"), f"{path}.retry_budget")
        if policy is None or not _clean(values) or self.v.errors:
            return None
        try:
            return Dependency(
                name=name,
                criticality=criticality,
                match=match,
                policy=policy,
                fallback=fallback,
                health_check=health_check,
                business_errors=business_errors,
                limits=limits,
                retry_budget=retry_budget,
            )
        except ValueError as exc:
            self.v.report(path, str(exc))
            return None

    def loaded(self, values: dict[str, Any]) -> LoadedConfig | None:
        if any(values[key] is _BAD for key in ("defaults", "dependencies", "telemetry")):
            return None
        defaults = self.policy(
            BreakerPolicy(), values["defaults"].get("breaker"), "defaults.breaker"
        )
        dependencies = []
        for name, item in values["dependencies"].items():
            dependency = self.dependency(name, item, defaults)
            if dependency is not None:
                dependencies.append(dependency)
        telemetry = values["telemetry"]
        policy = self.policy(TELEMETRY_POLICY, telemetry.get("breaker"), "telemetry.breaker")
        chaos = self.chaos(values["chaos"], values["dependencies"])
        if self.v.errors or policy is None:
            return None
        dependencies.append(Dependency(TELEMETRY_DEPENDENCY, Criticality.MONITORING, policy=policy))
        settings = TelemetrySettings(
            export_timeout_seconds=float(telemetry["export_timeout_seconds"])
        )
        admin = values.get("admin")
        return LoadedConfig(
            dependencies,
            values["service"],
            settings,
            self.v.source,
            chaos,
            admin.get("token_env") if isinstance(admin, dict) else None,
        )


def _parse(document: Any, source: str | None) -> LoadedConfig:
    validator = _Validator(source)
    values = _walk_document(validator, document)
    loaded = None
    if values is not _BAD:
        loaded = _Builder(validator, document or {}).loaded(values)
    if validator.errors or loaded is None:
        raise ConfigError.combine(validator.errors or [validator.error("", "is invalid")])
    return loaded


# -- files ---------------------------------------------------------------------------------


def _read_bounded(path: str | os.PathLike[str], source: str) -> bytes:
    """At most ``MAX_CONFIG_BYTES`` of the file, never blocking on a FIFO without a writer
    and never reading an endless device to its end."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError("file not found", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=source) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError("is a directory, not a config file", source=source)
        if stat.S_ISREG(info.st_mode) and info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"is {info.st_size} bytes; a config file may hold at most {MAX_CONFIG_BYTES}",
                source=source,
            )
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"holds more than {MAX_CONFIG_BYTES} bytes, the most a config file may hold",
                source=source,
            )
        return b"".join(chunks)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=source) from None
    finally:
        os.close(fd)


_YAML_PARSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_COLLECTION_TAGS = (None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class _Mapping:
    """A mapping being built from events, with its ``<<`` merges kept for the end."""

    __slots__ = ("key", "merges", "value", "want_value")

    def __init__(self) -> None:
        self.value: dict[Any, Any] = {}
        self.merges: list[Any] = []
        self.key: Any = None
        self.want_value = False


def _yaml(text: str) -> Any:
    """YAML as ``yaml.safe_load`` reads it, built in one pass over the parser's events.

    Composing a node graph first (what ``safe_load`` does) recurses once per level of
    nesting and costs several times more than the events: here nesting deeper than
    ``MAX_NESTING`` is refused as it is met, and thousands of dependencies load in a
    fraction of a second. Scalars are resolved and built by PyYAML's own safe resolver and
    constructors, so values mean exactly what they mean to ``safe_load``.
    """
    helper = yaml.SafeLoader("")
    constructors = helper.yaml_constructors
    stack: list[Any] = []
    anchors: dict[str, Any] = {}
    document: Any = None
    documents = 0
    event: Any
    for event in yaml.parse(text, Loader=_YAML_PARSER):
        kind = type(event)
        value: Any
        if kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise _Invalid("holds more than one YAML document")
            continue
        if kind is yaml.ScalarEvent:
            tag = event.tag
            if tag is None or tag == "!":
                tag = helper.resolve(  # type: ignore[no-untyped-call]
                    yaml.ScalarNode, event.value, event.implicit
                )
            if tag == _STR_TAG:
                value = event.value
            elif tag == _MERGE_TAG and stack and isinstance(stack[-1], _Mapping):
                value = _MERGE_TAG
            else:
                construct = constructors.get(tag)
                if construct is None:
                    raise _Invalid(f"the tag {tag} is not allowed")
                value = construct(helper, yaml.ScalarNode(tag, event.value, style=event.style))
        elif kind is yaml.AliasEvent:
            if event.anchor not in anchors:
                raise _Invalid(f"unknown alias *{event.anchor}")
            value = anchors[event.anchor]
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            if event.tag not in _COLLECTION_TAGS:
                raise _Invalid(f"the tag {event.tag} is not allowed")
            if len(stack) >= MAX_NESTING:
                raise _Invalid(f"nested deeper than {MAX_NESTING} levels")
            container: Any = _Mapping() if kind is yaml.MappingStartEvent else []
            if event.anchor:
                anchors[event.anchor] = (
                    container.value if isinstance(container, _Mapping) else container
                )
            stack.append(container)
            continue
        elif kind is yaml.MappingEndEvent:
            mapping = stack.pop()
            value = mapping.value
            for merged in reversed(mapping.merges):
                for source in merged if isinstance(merged, list) else [merged]:
                    if not isinstance(source, dict):
                        raise _Invalid("a merge key (<<) takes a mapping or a list of mappings")
                    for key, item in source.items():
                        value.setdefault(key, item)
        elif kind is yaml.SequenceEndEvent:
            value = stack.pop()
        else:
            continue
        if kind is yaml.ScalarEvent and event.anchor:
            anchors[event.anchor] = value
        if not stack:
            document = value
            continue
        top = stack[-1]
        if isinstance(top, list):
            top.append(value)
        elif not top.want_value:
            if isinstance(value, (dict, list)):
                raise _Invalid("a mapping key must be a plain value, not a mapping or list")
            top.key = value
            top.want_value = True
        else:
            if top.key is _MERGE_TAG:
                top.merges.append(value)
            else:
                top.value[top.key] = value
            top.want_value = False
    return document


def _depth_ok(document: Any) -> bool:
    """Whether ``document`` nests no deeper than ``MAX_NESTING`` (iteratively)."""
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            return False
        if isinstance(value, Mapping):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return True


def read_config_file(path: str | os.PathLike[str]) -> Any:
    """Parse a YAML, TOML or JSON file into plain data; errors name the file."""
    source = str(path)
    data = _read_bounded(path, source)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            source=source,
        ) from None
    suffix = Path(path).suffix.lower()
    kind = suffix.lstrip(".") if suffix in (".toml", ".json") else "yaml"
    try:
        if kind == "toml":
            document: Any = tomllib.loads(text)
        elif kind == "json":
            document = json.loads(text)
        else:
            document = _yaml(text)
    except RecursionError:
        raise ConfigError(f"nested deeper than {MAX_NESTING} levels", source=source) from None
    except Exception as exc:  # any parser failure (int digit limit...) is a config error
        message = " ".join(str(exc).split())[:300]
        if "maximum nesting depth" in message:  # libyaml's own, far higher, cap
            raise ConfigError(f"nested deeper than {MAX_NESTING} levels", source=source) from None
        raise ConfigError(f"not valid {kind}: {message}", source=source) from None
    if kind != "yaml" and not _depth_ok(document):
        raise ConfigError(f"nested deeper than {MAX_NESTING} levels", source=source)
    return document


def parse_config(config: Mapping[str, Any] | str | os.PathLike[str] | None) -> LoadedConfig:
    """A validated config from a path, a dict, or None (then ``$OTEL_RESILIENCE_CONFIG``,
    else defaults); ``_registry.load_config`` makes it a Registry."""
    if config is None:
        env_path = os.environ.get(CONFIG_ENV_VAR)
        config = env_path if env_path else {}
    if isinstance(config, Mapping):
        return _parse(config, None)
    if isinstance(config, (str, os.PathLike)):
        document = read_config_file(config)
        return _parse(document, str(config))
    raise TypeError(f"config must be a path, a mapping or None, got {type(config).__name__}")


# -- check-config warnings -----------------------------------------------------------------


def config_warnings(document: Any) -> list[str]:
    """What loads but is probably wrong, one line each (for ``check-config``)."""
    warnings = []
    dependencies = document.get("dependencies") if isinstance(document, Mapping) else None
    for name, raw in (dependencies or {}).items():
        values = raw if isinstance(raw, Mapping) else {}
        path = f"dependencies.{name}"
        if not values.get("match"):
            warnings.append(
                f"{path}: no match, so no client span is counted for it; only calls made "
                "through registry.call, protect or guard reach its breaker"
            )
        if "criticality" not in values:
            warnings.append(f"{path}: no criticality, so it is optional")
        elif str(values.get("criticality")).lower() == "critical" and not values.get(
            "health_check"
        ):
            warnings.append(
                f"{path}: critical with no health_check, so an outage is only noticed when "
                "traffic fails"
            )
    return warnings


# -- the reference page --------------------------------------------------------------------


def _render_default(key: Key) -> str:
    default = key.default
    if default is REQUIRED:
        return "required"
    if isinstance(key.kind, (Section, Names)):
        return "-"
    if default is None:
        return "null"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float):
        return f"{default:g}" if not default.is_integer() else f"{default:.1f}"
    return str(default)


def _is_breaker_key(key: Key) -> bool:
    return key.path.startswith("<breaker>.")


def config_reference() -> str:
    """docs/configuration.md, generated from ``KEYS`` (a test keeps the file equal)."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from otel_resilience/_config.py (KEYS) by",
        "     `python -m otel_resilience._config > docs/configuration.md`; a test fails when",
        "     this file and the validator differ. -->",
        "",
        "The configuration file (`resilience.yaml`; `.toml` and `.json` are read too, and a",
        "dict works the same) is found at the path given to `configure()` or",
        "`Registry.from_config()`, else at `$OTEL_RESILIENCE_CONFIG`; with neither, every",
        "default below applies and no dependency is declared.",
        "",
        "Every key is checked when the file is loaded. Unknown keys, wrong types and values",
        "outside the range below are errors naming the file, the key path and what is allowed,",
        "all of them at once (`otel-resilience check-config resilience.yaml` prints one line",
        "each and exits 2). Import paths (fallbacks, health checks, business errors) are",
        "imported at load time, so a bad one fails there and not at the first outage. A file",
        f"may hold at most {MAX_CONFIG_BYTES} bytes of UTF-8 text nested at most",
        f"{MAX_NESTING} levels deep. Under `opentelemetry-instrument` an invalid file is one log",
        "line: OpenTelemetry starts without the breakers, and `/health` shows the error in",
        "its `config_error` field.",
        "",
        "`<name>` stands for a name you choose (a dependency's name). The breaker keys,",
        "under `<breaker>`, are the same in `defaults.breaker`, `dependencies.<name>.breaker`",
        "and `telemetry.breaker`.",
        "",
        "| key | type | default | allowed | meaning |",
        "|---|---|---|---|---|",
    ]
    lines += [_row(key) for key in KEYS if not _is_breaker_key(key)]
    lines += ["", "## Breaker policy keys (`<breaker>`)", ""]
    lines += ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    lines += [_row(key) for key in KEYS if _is_breaker_key(key)]
    lines += [
        "",
        "## Warnings",
        "",
        "`check-config` also warns (and still exits 0) about what loads but is probably",
        "wrong: a dependency with no `match`, one with no `criticality`, and a critical",
        "dependency with no `health_check`.",
        "",
    ]
    return "\n".join(lines)


def _row(key: Key) -> str:
    allowed = key.kind.allowed().replace("|", "\\|")
    return f"| `{key.path}` | {key.kind.type} | {_render_default(key)} | {allowed} | {key.doc} |"


if __name__ == "__main__":  # pragma: no cover - regenerates docs/configuration.md
    sys.stdout.write(config_reference())
