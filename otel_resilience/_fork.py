"""Fork safety: what the library runs in the background runs again in a forked child.

Pre-fork servers (gunicorn ``--preload``, ``opentelemetry-instrument gunicorn``,
multiprocessing with ``fork``) fork after the library is set up. A child has only the
thread that forked: the exporters' workers and the prober are gone, and a lock another
thread held at that instant stays held forever. Each object that owns a thread or a lock
registers a method here, run in the child right after ``os.fork`` (as the SDK's
``BatchSpanProcessor`` does), which makes fresh locks and starts its thread again.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["after_fork_in_child", "around_fork", "renew_breaker_locks"]

_log = logging.getLogger(__name__)


def after_fork_in_child(method: Callable[[], Any]) -> None:
    """Call the bound ``method`` in every child forked from now on, while its object lives.

    The object is held weakly, so registering does not keep it alive; a method that raises
    is logged, never raised into the forking code.
    """
    register = getattr(os, "register_at_fork", None)
    if register is None:  # pragma: no cover - not on this platform (Windows)
        return
    reference = weakref.WeakMethod(method)

    def run() -> None:
        _call_weakly(reference, "could not restart %r after fork")

    register(after_in_child=run)


def _call_weakly(reference: weakref.WeakMethod[Callable[[], Any]], failure: str) -> bool:
    """Call the method ``reference`` holds, if its object lives; True if it was called
    and returned. What it raises is logged with ``failure`` (``%r``: the method), never
    raised into the forking code, which must go on."""
    bound = reference()
    if bound is None:
        return False
    try:
        bound()
    except Exception:  # pragma: no cover - a bug
        _log.exception(failure, bound)
        return False
    return True


def around_fork(before: Callable[[], Any], after_in_parent: Callable[[], Any]) -> None:
    """Call the bound ``before`` in the forking thread just before each ``os.fork`` from
    now on, and the bound ``after_in_parent`` in the parent just after it, while their
    object lives (held weakly, as by ``after_fork_in_child``). ``after_in_parent`` runs
    only after a ``before`` that returned; what either raises is logged, never raised
    into the forking code."""
    register = getattr(os, "register_at_fork", None)
    if register is None:  # pragma: no cover - not on this platform (Windows)
        return
    first, then = weakref.WeakMethod(before), weakref.WeakMethod(after_in_parent)
    done = threading.local()

    def run_before() -> None:
        done.ran = False  # (first: a before that raises leaves it so)
        done.ran = _call_weakly(first, "could not prepare %r for a fork")

    def run_after() -> None:
        if getattr(done, "ran", False):
            done.ran = False
            _call_weakly(then, "could not resume %r after fork")

    register(before=run_before, after_in_parent=run_after)


def renew_breaker_locks(breakers: Iterable[Any]) -> None:
    """Give each breaker a fresh lock; only in a forked child, where no other thread runs.

    A breaker's lock is held for bookkeeping only, but a thread of the parent (an export,
    a request) may have held it at the fork; the child would then wait for it forever. The
    breaker's counts and state are kept: the child starts from the parent's state.
    """
    for breaker in breakers:
        breaker._lock = threading.Lock()
