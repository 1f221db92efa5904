"""OpenTelemetry's own test suites of the client instrumentations pass with the library on.

For each instrumentation of docs/clients.md, the test suite of the installed version is
taken from its sdist (``pip download``, cached between runs) and run twice: as it is,
and with ``configure()`` around every test (``tests/upstream/otel_resilience_upstream.py``,
dependencies that the suites' calls match, so the guards take part). Every test that
passes without the library must pass with it: its guards must not strip, double or
change anything these suites check (``uninstrument()``, re-instrumenting, hooks, span
attributes, options given to ``instrument()``).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

PLUGIN_DIR = Path(__file__).resolve().parent / "upstream"
CACHE = Path(
    os.environ.get(
        "OTEL_RESILIENCE_UPSTREAM_CACHE",
        Path(tempfile.gettempdir()) / "otel-resilience-upstream-suites",
    )
)

SUITES = (
    "opentelemetry-instrumentation-redis",
    "opentelemetry-instrumentation-asyncpg",
    "opentelemetry-instrumentation-httpx",
    "opentelemetry-instrumentation-psycopg",
    "opentelemetry-instrumentation-psycopg2",
    "opentelemetry-instrumentation-sqlalchemy",
    "opentelemetry-instrumentation-requests",
    "opentelemetry-instrumentation-urllib3",
    "opentelemetry-instrumentation-aiohttp-client",
    "opentelemetry-instrumentation-grpc",
)


def unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def suite(distribution: str) -> Path:
    """The unpacked sdist of the installed version of ``distribution`` (with ``tests/``)."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        unavailable(f"{distribution} is not installed")
    target = CACHE / f"{distribution}-{version}"
    if (target / "tests").is_dir():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        download = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--dest",
                scratch,
                f"{distribution}=={version}",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=180,
        )
        archives = list(Path(scratch).glob("*.tar.gz"))
        if download.returncode != 0 or not archives:
            unavailable(f"could not download the sdist of {distribution}: {download.stderr}")
        with tarfile.open(archives[0]) as archive:
            archive.extractall(scratch, filter="data")
        unpacked = next(path for path in Path(scratch).iterdir() if (path / "tests").is_dir())
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(unpacked), target)
    return target


def outcomes(directory: Path, report: Path, *, with_library: bool) -> dict[str, str]:
    """Run the suite in ``directory``; test id -> passed, failed or skipped."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={report}",
    ]
    if with_library:
        command += ["-p", "otel_resilience_upstream"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])
        ),
        # The grpc suite's generated protobuf modules predate the C implementation's rules.
        "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
    }
    env.pop("OTEL_RESILIENCE_CONFIG", None)
    subprocess.run(command, cwd=directory, env=env, check=False, capture_output=True, timeout=600)
    results: dict[str, str] = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            results[name] = "failed"
        elif case.find("skipped") is not None:
            results[name] = "skipped"
        else:
            results[name] = "passed"
    return results


@pytest.mark.parametrize("distribution", SUITES)
def test_upstream_suite_passes_with_the_library_configured(
    distribution: str, tmp_path: Path
) -> None:
    """Every upstream test that passes without otel_resilience passes with it configured."""
    directory = suite(distribution)
    without = outcomes(directory, tmp_path / "without.xml", with_library=False)
    with_library = outcomes(directory, tmp_path / "with.xml", with_library=True)
    passing = {name for name, outcome in without.items() if outcome == "passed"}
    assert len(passing) >= 10, f"the {distribution} suite hardly ran: {without}"
    broken = sorted(name for name in passing if with_library.get(name) != "passed")
    assert not broken, f"{len(broken)} of {len(passing)} passing tests fail with the library"
