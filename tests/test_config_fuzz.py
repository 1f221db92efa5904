"""The loader under fuzzing: any bytes, any YAML, any dict give a ConfigError or a working
Registry, within a second of CPU time, and never anything else."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_resilience import ConfigError, Registry, load_config
from otel_resilience._config import KEYS, MAX_NESTING, _yaml

# Names the schema knows, so that generated documents reach deep into validation.
KEY_NAMES = sorted(
    {part for key in KEYS for part in key.path.split(".") if not part.startswith("<")}
    | {"redis", "postgres", "db.system", "server.address", "memory", "none", "sql"}
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(KEY_NAMES),
    st.text(max_size=20),
    st.sampled_from(
        [
            "memory",
            "none",
            "sql",
            "redis",
            "http",
            "critical",
            "optional",
            ".rel:x",
            "os:getcwd",
            "builtins:ValueError",
            "tests.fallbacks_for_tests:local_analytics",
            "no_such_module_zz:f",
            "gradient2",
        ]
    ),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEY_NAMES), st.text(max_size=8)), children, max_size=5
        ),
    ),
    max_leaves=40,
)


def check_outcome(load: Any) -> None:
    """``load()`` returns a usable Registry or raises ConfigError, within a second of CPU."""
    started = time.thread_time()
    message = None
    try:
        registry = load()
    except ConfigError as error:
        message = str(error)
    if message is not None:
        assert message
        assert all(line.strip() for line in message.splitlines())
    else:
        assert isinstance(registry, Registry)
        registry.health().to_dict()
        registry.classify({"db.system": "redis", "server.address": "h"})
    assert time.thread_time() - started < 1.0


@FUZZ
@given(st.dictionaries(st.sampled_from(KEY_NAMES), documents, max_size=6))
def test_any_dict(document: dict[str, Any]) -> None:
    """Any nesting of known and unknown keys and values, as a dict."""
    check_outcome(lambda: load_config(document))


@pytest.fixture(scope="module")
def config_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every example's file (tempfile's random names, made inside an example,
    draw on the ``random`` module, which hypothesis warns about). Each example rewrites it."""
    return tmp_path_factory.mktemp("config")


@FUZZ
@given(document=st.dictionaries(st.sampled_from(KEY_NAMES), documents, max_size=6))
def test_any_yaml_document(config_directory: Path, document: dict[str, Any]) -> None:
    """The same documents written as YAML files."""
    path = config_directory / "resilience.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    check_outcome(lambda: load_config(path))


yaml_fragments = st.sampled_from(
    [
        "dependencies:",
        "  r:",
        "    breaker: {window_size: ",
        "1.0e+12",
        ".inf",
        ".nan",
        "1.0e-310",
        "&a [*a]",
        "*a",
        "&x",
        "!!python/object:os.system",
        "!!binary aGk=",
        "!!set {a, b}",
        "<<: *a",
        "? [a, b]\n: c",
        "---",
        "[",
        "{",
        "]",
        "}",
        "- ",
        ": ",
        "'",
        '"',
        "\t",
        "\n",
        "  ",
        "fallback: memory",
        "criticality: critical",
        "match: {db.system: redis}",
        "health_check: sql",
        "business_errors: [builtins:KeyError]",
        "9" * 5000,
        "%YAML 1.1",
        "\ufeff",
    ]
)


@FUZZ
@given(parts=st.lists(st.one_of(yaml_fragments, st.text(max_size=10)), max_size=30))
def test_any_yaml_text(config_directory: Path, parts: list[str]) -> None:
    """Arbitrary YAML text, assembled from tricky pieces (tags, anchors, merge keys, flow
    collections, huge numbers), loads or is a ConfigError; where yaml.safe_load reads it,
    the loader reads the same document."""
    text = "".join(parts)
    path = config_directory / "resilience.yaml"
    path.write_text(text, encoding="utf-8")
    check_outcome(lambda: load_config(path))
    try:  # the reference: safe_load on the same (libyaml) parser
        expected = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except Exception:
        return
    try:
        got = _yaml(text)
    except Exception:
        return  # refused (a tag, nesting): the loader says why, as a ConfigError
    assert repr(got) == repr(expected)  # repr: recursive documents and NaN compare too


@FUZZ
@given(
    data=st.binary(max_size=2000), suffix=st.sampled_from([".yaml", ".json", ".toml", ".yml", ""])
)
def test_any_bytes(config_directory: Path, data: bytes, suffix: str) -> None:
    """Arbitrary bytes in a file of any suffix."""
    path = config_directory / f"resilience{suffix}"
    path.write_bytes(data)
    check_outcome(lambda: load_config(path))


@settings(max_examples=20, deadline=None)
@given(depth=st.integers(min_value=MAX_NESTING - 2, max_value=MAX_NESTING + 2))
def test_nesting_around_the_cap(config_directory: Path, depth: int) -> None:
    """Right around the nesting cap, YAML loads or is refused cleanly."""
    text = "service: " + "[" * depth + "]" * depth
    path = config_directory / "r.yaml"
    path.write_text(text)
    check_outcome(lambda: load_config(path))
