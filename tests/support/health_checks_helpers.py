"""Callables that the health-check tests name by import path."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

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


hung_starts: list[float] = []


def sync_hangs_forever() -> bool:
    """A sync check that never returns (a driver call stuck on a dead socket)."""
    hung_starts.append(time.monotonic())
    threading.Event().wait()
    return True


psycopg2_pool: list[Any] = []


def psycopg2_pool_select_1() -> bool:
    """A check that queries through the application's own psycopg2 connection."""
    with psycopg2_pool[0].cursor() as cursor:
        cursor.execute("SELECT 1")
        return bool(cursor.fetchone() == (1,))


redis_clients: list[Any] = []


def redis_client_ping() -> bool:
    """A check that pings through the application's own redis-py client."""
    return bool(redis_clients[0].ping())
