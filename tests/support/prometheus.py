"""A real Prometheus for tests: started on a free port with the given targets and rules."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.health_servers import free_port, need_tool

__all__ = ["alerts_named", "api", "prometheus", "wait_for"]


def api(base: str, path: str, **params: str) -> Any:
    """The ``data`` of a Prometheus HTTP API answer."""
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())["data"]


def alerts_named(base: str, name: str, state: str | None = None) -> list[dict[str, Any]]:
    """The active alerts called ``name`` (in ``state``, when given)."""
    return [
        alert
        for alert in api(base, "/api/v1/alerts")["alerts"]
        if alert["labels"]["alertname"] == name and (state is None or alert["state"] == state)
    ]


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check.__doc__ or check}")
        time.sleep(0.25)


@contextlib.contextmanager
def prometheus(
    directory: Path,
    targets: Sequence[str],
    rules: Mapping[str, str],
    *,
    job: str = "resilience-test",
    interval: str = "1s",
) -> Iterator[str]:
    """A Prometheus scraping ``targets`` every ``interval`` with ``rules`` (file name to
    text) loaded; yields its base URL once it is ready."""
    binary = need_tool("prometheus")
    for name, text in rules.items():
        (directory / name).write_text(text)
    (directory / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": interval, "evaluation_interval": interval},
                "rule_files": list(rules),
                "scrape_configs": [
                    {"job_name": job, "static_configs": [{"targets": list(targets)}]}
                ],
            }
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
