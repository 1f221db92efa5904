"""Operator events of a registry: reloads, manual breaker actions, chaos switched on or off.

Breaker transitions have their own listeners (``Registry.add_transition_listener``); the
events here are what an operator did to a running service, so a live view (the example's
``/resilience`` page) or an audit hook can show them beside the transitions.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["OperatorEvent", "add_event_listener", "emit_event"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OperatorEvent:
    """Something done to a running registry.

    ``kind`` is ``"reload"`` (``detail`` is ``applied`` or ``failed: ...``), ``"manual"``
    (``detail`` is the action: ``force-open``, ``disable``, ``reset``) or ``"chaos"``
    (``on`` / ``off``); ``dependency`` is None for the whole registry; ``at`` is wall-clock
    seconds since the epoch.
    """

    kind: str
    detail: str
    dependency: str | None = None
    at: float = 0.0


EventListener = Callable[[OperatorEvent], None]

_listeners: weakref.WeakKeyDictionary[Registry, list[EventListener]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def add_event_listener(registry: Registry, listener: EventListener) -> Callable[[], None]:
    """Call ``listener(event)`` for each operator event of ``registry``; returns a remover."""
    with _lock:
        _listeners.setdefault(registry, []).append(listener)

    def remove() -> None:
        with _lock, contextlib.suppress(KeyError, ValueError):
            _listeners[registry].remove(listener)

    return remove


def emit_event(
    registry: Registry, kind: str, detail: str, dependency: str | None = None
) -> OperatorEvent:
    """Tell ``registry``'s event listeners; never raises (a failing listener is logged)."""
    event = OperatorEvent(kind, detail, dependency, time.time())
    with _lock:
        listeners = tuple(_listeners.get(registry, ()))
    for listener in listeners:
        try:
            listener(event)
        except Exception:
            _log.exception("event listener %r failed on %s", listener, event)
    return event
