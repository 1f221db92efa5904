"""Builds the optional C accelerators of the per-call path (pyproject.toml holds the rest).

Each accelerator has a pure-Python twin that behaves the same (``otel_resilience/_accel.py``
chooses); without a C compiler the build leaves them out with a warning and the package
works unchanged, only slower per call. ``OTEL_RESILIENCE_REQUIRE_ACCELERATORS=1`` makes a
failed build an error instead.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

ACCELERATORS = ("_conend", "_cmemory", "_cguard")
REQUIRED = os.environ.get("OTEL_RESILIENCE_REQUIRE_ACCELERATORS", "").strip() not in ("", "0")

setup(
    ext_modules=[
        Extension(f"otel_resilience.{name}", [f"otel_resilience/{name}.c"], optional=not REQUIRED)
        for name in ACCELERATORS
    ],
)
