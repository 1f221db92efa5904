"""Operator events of a registry: reloads, manual breaker actions, chaos switched on or off.

Breaker transitions have their own listeners (``Registry.add_transition_listener``); the
events here are what an operator did to a running service, so a live view (the example's
``/resilience`` page) or an audit hook can show them beside the transitions. The registry
keeps its listeners (``Registry.add_event_listener``); features report with ``emit_event``,
which needs of a registry only its listeners (``EventSource``), so this module imports none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["EventListener", "EventSource", "OperatorEvent", "emit_event"]

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


class EventSource(Protocol):
    """What ``emit_event`` needs of a registry (``Registry`` is one): its listeners now."""

    def event_listeners(self) -> tuple[EventListener, ...]: ...


def emit_event(
    registry: EventSource, kind: str, detail: str, dependency: str | None = None
) -> OperatorEvent:
    """Tell ``registry``'s event listeners; never raises (a failing listener is logged)."""
    event = OperatorEvent(kind, detail, dependency, time.time())
    for listener in registry.event_listeners():
        try:
            listener(event)
        except Exception:
            _log.exception("event listener %r failed on %s", listener, event)
    return event
