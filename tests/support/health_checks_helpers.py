"""Callables that the health-check tests name by import path."""

from __future__ import annotations

import asyncio
import time

NOT_CALLABLE = 42
calls: list[str] = []


def sync_ok() -> bool:
    calls.append("sync_ok")
    return True


def sync_false() -> bool:
    return False


def sync_raises() -> None:
    raise ConnectionError("cannot reach postgresql://app:hunter2@db.internal:5432/app")


async def async_ok() -> None:
    await asyncio.sleep(0)


async def async_hangs() -> None:
    await asyncio.sleep(60)


def sync_slow() -> bool:
    time.sleep(0.5)
    return True
