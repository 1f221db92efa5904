"""Builds the optional C accelerators of the per-call path (pyproject.toml holds the rest).

Each accelerator has a pure-Python twin that behaves the same (``otel_resilience/_accel.py``
chooses); without a C compiler the build leaves them out and the package works unchanged,
only slower per call. ``OTEL_RESILIENCE_REQUIRE_ACCELERATORS=1`` (CI sets it) makes a failed
build an error instead.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ACCELERATORS = ("_conend", "_cmemory", "_cguard")


class OptionalBuildExt(build_ext):
    """``build_ext`` that warns and goes on when an accelerator does not compile."""

    def _required(self) -> bool:
        return os.environ.get("OTEL_RESILIENCE_REQUIRE_ACCELERATORS", "") not in ("", "0")

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            if self._required():
                raise
            print(f"otel-resilience: C accelerators not built ({exc}); pure Python it is")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            if self._required():
                raise
            print(f"otel-resilience: {ext.name} not built ({exc}); pure Python it is")


setup(
    ext_modules=[
        Extension(f"otel_resilience.{name}", [f"otel_resilience/{name}.c"], optional=True)
        for name in ACCELERATORS
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
