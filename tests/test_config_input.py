"""Hostile and broken config input: every case is one ConfigError naming the file and key."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from otel_resilience import BreakerPolicy, ConfigError, load_config
from otel_resilience._config import KEYS, MAX_CONFIG_BYTES, MAX_NESTING, config_reference

ROOT = Path(__file__).resolve().parent.parent


def error_of(config: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(config)
    return info.value


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_non_utf8_file(tmp_path: Path) -> None:
    """A file that is not UTF-8 is a ConfigError naming the file and the offending byte."""
    path = write(tmp_path, "latin.yaml", "service: caf\xe9\n".encode("latin-1"))
    assert str(error_of(path)) == f"{path}: is not UTF-8 text (byte 0xe9 at offset 12)"


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    """A file over the size cap is refused, by its size, without being parsed."""
    path = tmp_path / "huge.yaml"
    with path.open("wb") as file:
        file.truncate(11 * 1024 * 1024)  # sparse: 11 MiB of zero bytes
    message = str(error_of(path))
    assert message.startswith(f"{path}: is {11 * 1024 * 1024} bytes; a config file may hold")


def test_endless_device_is_refused() -> None:
    """/dev/zero is read only up to the size cap, then refused."""
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero on this system")
    message = str(error_of("/dev/zero"))
    assert (
        message
        == f"/dev/zero: holds more than {MAX_CONFIG_BYTES} bytes, the most a config file may hold"
    )


def test_fifo_without_writer_does_not_hang(tmp_path: Path) -> None:
    """A named pipe nobody writes to reads as empty instead of blocking the loader."""
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    assert [d.name for d in load_config(fifo)] == ["telemetry"]


def test_directory(tmp_path: Path) -> None:
    """A directory is named as such."""
    assert str(error_of(tmp_path)) == f"{tmp_path}: is a directory, not a config file"


@pytest.mark.parametrize("suffix", [".yaml", ".json", ".toml"])
def test_deep_nesting(tmp_path: Path, suffix: str) -> None:
    """Nesting far deeper than the cap is a ConfigError, never a RecursionError."""
    depth = 50_000
    text = {
        ".yaml": "service: " + "[" * depth + "]" * depth,
        ".json": '{"service": ' + "[" * depth + "]" * depth + "}",
        ".toml": "service = " + "[" * depth + "]" * depth,
    }[suffix]
    path = write(tmp_path, "deep" + suffix, text)
    assert f"nested deeper than {MAX_NESTING} levels" in str(error_of(path))


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_nesting_just_past_the_cap(tmp_path: Path, suffix: str) -> None:
    """JSON and TOML nested a little deeper than the cap (no recursion limit involved) are
    refused as YAML is, whether the levels are lists or mappings."""
    lists = "[" * (MAX_NESTING + 2) + "]" * (MAX_NESTING + 2)
    tables = '{"a": ' * (MAX_NESTING + 2) + "1" + "}" * (MAX_NESTING + 2)
    for name, nested in (("lists", lists), ("tables", tables)):
        if suffix == ".toml":
            text = "service = " + nested.replace('{"a": ', "{a = ") + "\n"
        else:
            text = f'{{"service": {nested}}}'
        path = write(tmp_path, name + suffix, text)
        assert str(error_of(path)) == f"{path}: nested deeper than {MAX_NESTING} levels"


def test_yaml_structure_errors_name_the_file(tmp_path: Path) -> None:
    """An unknown alias, a merge key (<<) of a plain value and a mapping used as a key are
    refused, naming the file and what is wrong."""
    cases = {
        "alias.yaml": ("service: *nowhere\n", "unknown alias *nowhere"),
        "merge.yaml": ("base: &b 5\nservice:\n  <<: *b\n", "a merge key (<<) takes a mapping"),
        "key.yaml": ("? [a, b]\n: service\n", "a mapping key must be a plain value"),
    }
    for name, (text, message) in cases.items():
        path = write(tmp_path, name, text)
        assert message in str(error_of(path)), str(error_of(path))


def test_a_path_that_cannot_be_opened(tmp_path: Path) -> None:
    """A path the system cannot open (a name too long) is a ConfigError saying why."""
    path = tmp_path / ("x" * 300 + ".yaml")
    assert str(error_of(path)) == f"{path}: cannot read: File name too long"


def test_nesting_within_the_cap_is_an_ordinary_error(tmp_path: Path) -> None:
    """Nesting below the cap parses, and the value is then refused for its type."""
    path = write(tmp_path, "ok.yaml", "service: " + "[" * 10 + "]" * 10)
    assert str(error_of(path)).startswith(f"{path}: service: must be a non-empty string")


def test_alias_bomb_is_cheap(tmp_path: Path) -> None:
    """A billion-laughs document loads (or fails) quickly: aliases are shared, not copied."""
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    lines.append("dependencies: {r: {business_errors: *a9}}")
    path = write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n")
    started = time.monotonic()
    message = str(error_of(path))
    assert time.monotonic() - started < 10  # a hang-catching bound, not a speed target
    assert "a0: unknown key" in message


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"defaults": {"breaker": {"window_size": 10**12}}},
            "defaults.breaker.window_size: must be an integer from 1 to 1000000, got 1000000000000",
        ),
        (
            {"dependencies": {"r": {"breaker": {"window_seconds": 1.0e-310}}}},
            "dependencies.r.breaker.window_seconds: must be a number of seconds from 0.01 to "
            "86400 or null, got 1e-310",
        ),
        (
            {"telemetry": {"export_timeout_seconds": float("inf")}},
            "telemetry.export_timeout_seconds: must be finite (a number of seconds from 0.01 "
            "to 300), got inf",
        ),
        (
            {"telemetry": {"export_timeout_seconds": float("nan")}},
            "telemetry.export_timeout_seconds: must be finite",
        ),
        (
            {"dependencies": {"r": {"breaker": {"open_seconds": 10**400}}}},
            "dependencies.r.breaker.open_seconds: must be a number of seconds from 0.001 to "
            "604800, got 1000",
        ),
        (
            {"dependencies": {"r": {"breaker": {"call_timeout_seconds": 1e300}}}},
            "dependencies.r.breaker.call_timeout_seconds: must be a number of seconds",
        ),
        (
            {"dependencies": {"r": {"health_check": {"type": "redis", "timeout_seconds": 1e9}}}},
            "dependencies.r.health_check.timeout_seconds: must be a number of seconds from 0.01",
        ),
        (
            {"dependencies": {"r": {"fallback": {"type": "memory", "max_entries": 10**10}}}},
            "dependencies.r.fallback.max_entries: must be an integer from 1 to 10000000",
        ),
    ],
)
def test_numbers_that_would_overflow_or_exhaust_memory(config: Any, expected: str) -> None:
    """Every number is bounded so that no value can overflow, spin or allocate absurdly."""
    assert str(error_of(config)).startswith(expected)


def test_yaml_numbers_from_a_file(tmp_path: Path) -> None:
    """The YAML spellings of huge and non-finite numbers are refused with the key named."""
    path = write(
        tmp_path,
        "n.yaml",
        """\
        telemetry: {export_timeout_seconds: .inf}
        dependencies:
          r: {breaker: {window_size: 1.0e+12, window_seconds: 1.0e-310}}
        """,
    )
    lines = str(error_of(path)).splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "telemetry.export_timeout_seconds",
        "dependencies.r.breaker.window_size",
        "dependencies.r.breaker.window_seconds",
    ]


def test_policy_construction_is_bounded_too() -> None:
    """BreakerPolicy itself refuses the values the config refuses (the same table)."""
    with pytest.raises(ValueError, match="window_size must be an integer from 1 to 1000000"):
        BreakerPolicy(window_size=10**12)
    with pytest.raises(ValueError, match="window_seconds must be a number of seconds"):
        BreakerPolicy(window_seconds=1e-310)


def test_all_errors_at_once(tmp_path: Path) -> None:
    """Every problem in a document is reported, one line each, in document order."""
    path = write(
        tmp_path,
        "many.yaml",
        """\
        servce: x
        dependencies:
          a: {criticality: vital, breaker: {open_seconds: -1}}
          b: {fallback: memoryy, match: {db.system: [1]}}
        telemetry: {export_timeout_seconds: 0}
        """,
    )
    error = error_of(path)
    lines = str(error).splitlines()
    assert lines == [
        f"{path}: servce: unknown key (did you mean 'service'?); allowed: service, defaults, "
        "dependencies, telemetry, chaos, admin",
        f"{path}: dependencies.a.criticality: must be one of critical, important, optional, "
        "monitoring, got string 'vital'",
        f"{path}: dependencies.a.breaker.open_seconds: must be a number of seconds from 0.001 "
        "to 604800, got -1",
        f"{path}: dependencies.b.fallback: unknown built-in 'memoryy' (did you mean "
        "'memory'?); allowed: none, memory, or an import path 'package.module:name'",
        f"{path}: dependencies.b.match.db.system: must be a string or number, got list [1]",
        f"{path}: telemetry.export_timeout_seconds: must be a number of seconds from 0.01 to "
        "300, got 0",
    ]
    assert len(error.errors) == 6
    assert [e.path for e in error.errors][:2] == ["servce", "dependencies.a.criticality"]


def test_error_count_is_capped() -> None:
    """Thousands of errors are summarised after the first fifty."""
    error = error_of({"dependencies": {f"d{i}": {"criticality": "x"} for i in range(500)}})
    lines = str(error).splitlines()
    assert len(lines) == 51
    assert lines[-1] == "... and 450 more errors"
    assert len(error.errors) == 500


def test_cross_key_errors_come_with_the_others() -> None:
    """Import failures and cross-key rules are reported alongside type errors."""
    error = error_of(
        {
            "dependencies": {
                "a": {"fallback": "no_such_module_xyz:f", "breaker": {"minimum_calls": "x"}},
                "b": {"breaker": {"open_seconds": 100, "max_open_seconds": 10}},
            }
        }
    )
    lines = str(error).splitlines()
    assert lines[0].startswith("dependencies.a.breaker.minimum_calls: must be an integer")
    assert lines[1].startswith("dependencies.a.fallback: cannot import module")
    assert lines[2].startswith("dependencies.b.breaker.max_open_seconds: must be >= open_seconds")


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.parametrize(
    ("body", "raised"),
    [
        ("raise RuntimeError('boom')\n", "RuntimeError: boom"),
        ("def broken(:\n", "SyntaxError"),
        ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
        ("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
        ("import no_such_dependency_xyz\n", None),
    ],
)
@pytest.mark.parametrize("key", ["fallback", "health_check", "business_errors"])
def test_modules_that_fail_at_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, raised: str | None, key: str
) -> None:
    """A fallback, health check or business-error module that raises anything at import
    (a syntax error and sys.exit included) is a ConfigError naming the key and the module."""
    name = f"cfg_mod_{abs(hash((body, key)))}"
    _module(tmp_path, monkeypatch, name, body)
    value: Any = f"{name}:thing"
    if key == "business_errors":
        value = [value]
    message = str(error_of({"dependencies": {"r": {key: value}}}))
    at = f"dependencies.r.{key}" + ("[0]" if key == "business_errors" else "")
    assert message.startswith(f"{at}: "), message
    if raised is None:
        assert f"cannot import module {name!r}" in message
    else:
        assert f"importing module {name!r} of '{name}:thing' raised {raised}" in message
    assert name not in sys.modules


@pytest.mark.parametrize(
    "value", [".relative:thing", "..up:thing", "pkg:", ":thing", "a b:c", "pkg:thing()"]
)
def test_malformed_import_paths(value: str) -> None:
    """Relative and malformed import paths are refused before anything is imported."""
    message = str(error_of({"dependencies": {"r": {"fallback": value}}}))
    assert message.startswith("dependencies.r.fallback: "), message
    assert "is not an absolute import path of the form 'package.module:name'" in message


def test_unknown_yaml_tags_and_multiple_documents(tmp_path: Path) -> None:
    """Python-object tags and multi-document files are refused, naming the file."""
    tagged = write(tmp_path, "t.yaml", "service: !!python/object:os.system x\n")
    assert str(error_of(tagged)).startswith(f"{tagged}: not valid yaml: the tag")
    two = write(tmp_path, "two.yaml", "service: a\n---\nservice: b\n")
    assert str(error_of(two)) == f"{two}: not valid yaml: holds more than one YAML document"


def test_merge_keys_and_anchors_work(tmp_path: Path) -> None:
    """YAML anchors and merge keys behave as in yaml.safe_load."""
    path = write(
        tmp_path,
        "m.yaml",
        """\
        dependencies:
          a: &base {criticality: important, breaker: {open_seconds: 2, consecutive_failures: 2}}
          b:
            <<: *base
            criticality: optional
        """,
    )
    registry = load_config(path)
    assert registry["b"].criticality.value == "optional"
    assert registry["b"].policy.open_seconds == 2
    assert registry["a"].criticality.value == "important"


def _config_text(count: int) -> str:
    lines = ["dependencies:"]
    for index in range(count):
        lines.append(
            f"  dep{index}: {{criticality: optional, match: {{server.address: h{index}.internal}},"
            " breaker: {open_seconds: 5}}"
        )
    return "\n".join(lines) + "\n"


def test_load_time_grows_linearly(tmp_path: Path) -> None:
    """Load time grows linearly: 8 times the dependencies take far less than 64 times as long
    (what quadratic growth gives), and 5000 load in what is a second on a laptop."""
    small = write(tmp_path, "small.yaml", _config_text(500))
    large = write(tmp_path, "large.yaml", _config_text(4000))

    def best(path: Path) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            load_config(path)
            times.append(time.perf_counter() - started)
        return min(times)

    ratio = best(large) / best(small)
    assert ratio < 30, ratio
    registry = load_config(write(tmp_path, "5000.yaml", _config_text(5000)))
    assert len(registry) == 5001
    assert registry.classify({"server.address": "h4999.internal"}) == "dep4999"


def test_validated_but_unused_sections() -> None:
    """retry_budget, limits, chaos and admin are checked (types, ranges, combinations)."""
    load_config(
        {
            "dependencies": {
                "r": {
                    "retry_budget": {"percent": 0.1},
                    "limits": {"adaptive": "vegas", "min": 2, "max": 50, "initial": 10},
                },
                "s": {"limits": {"max_concurrent_calls": 64}},
            },
            "chaos": {"enabled": True, "dependencies": {"r": {"error_rate": 0.5}}},
            "admin": {"token_env": "ADMIN_TOKEN"},
        }
    )
    lines = str(
        error_of(
            {
                "dependencies": {
                    "r": {"limits": {"max_concurrent_calls": 4, "adaptive": "gradient2"}},
                    "s": {"limits": {"adaptive": "vegas", "min": 10, "max": 5}},
                    "t": {"retry_budget": {"percent": 2}},
                },
                "chaos": {"dependencies": {"r": {"latency_seconds": 1e9}}},
                "admin": {"token_env": "not a name"},
            }
        )
    ).splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        "dependencies.t.retry_budget.percent",
        "chaos.dependencies.r.latency_seconds",
        "admin.token_env",
        "dependencies.r.limits",
        "dependencies.s.limits",
    ]


def test_fallback_mapping_form() -> None:
    """`fallback: {type: memory, ...}` configures the memory cache; its options need memory."""
    registry = load_config(
        {"dependencies": {"r": {"fallback": {"type": "memory", "max_entries": 7}}}}
    )
    assert registry["r"].fallback.max_entries == 7  # type: ignore[union-attr]
    message = str(
        error_of({"dependencies": {"r": {"fallback": {"type": "none", "max_entries": 7}}}})
    )
    assert (
        message
        == "dependencies.r.fallback.max_entries: applies to the memory fallback only, not 'none'"
    )
    assert str(error_of({"dependencies": {"r": {"fallback": {}}}})) == (
        "dependencies.r.fallback.type: is required"
    )


def test_reference_doc_is_generated_from_the_schema() -> None:
    """docs/configuration.md is exactly what the schema generates (regenerate with
    `python -m otel_resilience._config > docs/configuration.md`)."""
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert doc == config_reference()
    for key in KEYS:
        assert f"`{key.path}`" in doc


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_resilience", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("service: caf\xe9\n".encode("latin-1"), "is not UTF-8 text"),
        (b"service: " + b"[" * 5000 + b"]" * 5000, "nested deeper than"),
        (b"defaults: {breaker: {window_size: 1000000000000}}\n", "window_size: must be"),
        (b"dependencies: {r: {breaker: {window_seconds: 1.0e-310}}}\n", "window_seconds"),
        (b"telemetry: {export_timeout_seconds: .inf}\n", "must be finite"),
        (b"dependencies: {r: {fallback: '.rel:x'}}\n", "absolute import path"),
        (b"dependencies: {r: {fallback: 'cfg_exit_mod:x'}}\n", "raised SystemExit: 4"),
        (b"dependencies: {r: {fallback: 'cfg_syntax_mod:x'}}\n", "raised SyntaxError"),
        (b"dependencies: [unclosed\n", "not valid yaml"),
    ],
)
def test_check_config_one_line_per_error(tmp_path: Path, content: bytes, expected: str) -> None:
    """check-config exits 2 and prints one line per error, never a traceback."""
    (tmp_path / "cfg_exit_mod.py").write_text("import sys\nsys.exit(4)\n")
    (tmp_path / "cfg_syntax_mod.py").write_text("def (\n")
    path = write(tmp_path, "bad.yaml", content)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run(
        [sys.executable, "-m", "otel_resilience", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{path}: "), lines[0]
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_check_config_many_errors_and_big_file(tmp_path: Path) -> None:
    """Several errors give several lines; /dev/zero and a huge file are refused quickly."""
    path = write(tmp_path, "bad.yaml", "servce: x\ndependencies: {a: {criticality: vital}}\n")
    result = run_cli("check-config", str(path))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 2
    for target in ("/dev/zero", str(write(tmp_path, "big.yaml", b"#" * (11 << 20)))):
        result = run_cli("check-config", target)
        assert result.returncode == 2
        assert len(result.stderr.splitlines()) == 1
        assert "Traceback" not in result.stderr


def test_check_config_warnings(tmp_path: Path) -> None:
    """What loads but is probably wrong is a warning line each, and the exit status is 0."""
    path = write(
        tmp_path,
        "warn.yaml",
        """\
        dependencies:
          nomatch: {criticality: optional}
          nocrit: {match: {db.system: redis}}
          db: {criticality: critical, match: {db.system: postgresql}}
          fine: {criticality: critical, match: {db.system: mysql}, health_check: sql}
        """,
    )
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {path}: dependencies.nomatch: no match, so no client span is counted for "
        "it; only calls made through registry.call, protect or guard reach its breaker",
        f"warning: {path}: dependencies.nocrit: no criticality, so it is optional",
        f"warning: {path}: dependencies.db: critical with no health_check, so an outage is only "
        "noticed when traffic fails",
    ]


def test_errors_never_show_a_secret_value() -> None:
    """A bad value that holds a credential is shown redacted in the error (which reaches
    logs and /health)."""
    message = str(error_of({"service": "postgresql://app:hunter2@db/prod" * 10}))
    assert "hunter2" not in message
    message = str(error_of({"dependencies": {"r": {"match": {"x": {"token": "hunter2"}}}}}))
    assert "hunter2" not in message
