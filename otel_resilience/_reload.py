"""Hot reload: a new config applied to a live registry in place, and what triggers it.

``Registry.reload(config)`` validates the new config by building a fresh Registry from it
(the config loader's full checks; a ``ConfigError`` then changes nothing), and only then
applies it to the live registry: the registry takes the fresh one's breaker policies
(state and windows kept), dependencies (criticality, match, fallback, retry budget; new
ones added), concurrency limits (a limiter whose policy is unchanged keeps its calls in
flight and learnt limit), chaos settings (a change is reported as a ``chaos`` on/off
event) and registry settings (``Registry._apply_reloaded``). A feature with state of its
own adds a step with ``add_reload_step`` (``_configure`` forgets the config error a
registry stood in for). What this module needs of a registry is ``Reloadable``, so it
imports no registry: the registry imports it.

Under auto-instrumentation ``install_reload_triggers`` reloads the file named by
``$OTEL_RESILIENCE_CONFIG`` in the registry its caller hands it, on SIGHUP, and every
``$OTEL_RESILIENCE_RELOAD_SECONDS`` when the file changed. The reload runs on a worker
thread, never in the signal handler: the handler may interrupt the main thread while it
holds a breaker's lock.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any, Protocol, TypeVar

from ._breaker import CircuitBreaker
from ._chaos import ChaosSettings
from ._config import CONFIG_ENV_VAR
from ._errors import ConfigError
from ._events import EventListener, emit_event

__all__ = [
    "RELOAD_SECONDS_ENV",
    "ReloadStep",
    "ReloadTrigger",
    "Reloadable",
    "add_reload_step",
    "install_reload_triggers",
    "reload_registry",
]

_log = logging.getLogger(__name__)

RELOAD_SECONDS_ENV = "OTEL_RESILIENCE_RELOAD_SECONDS"

ConfigSource = Mapping[str, Any] | str | os.PathLike[str]
_R = TypeVar("_R", bound="Reloadable")


class Reloadable(Protocol):
    """What a reload needs of a registry (``Registry`` is one): where its config came
    from, a way to build and validate a fresh one of its own kind, the step that takes the
    fresh one's settings in place, and what the reload reports (events, chaos, size)."""

    @property
    def source(self) -> str | None: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def chaos_settings(self) -> ChaosSettings: ...

    def from_config(self: _R, config: ConfigSource, *, clock: Callable[[], float]) -> _R: ...

    def _apply_reloaded(self: _R, fresh: _R) -> None: ...

    def breakers(self) -> dict[str, CircuitBreaker]: ...

    def event_listeners(self) -> tuple[EventListener, ...]: ...

    def __len__(self) -> int: ...


ReloadStep = Callable[[Reloadable, Reloadable], None]
"""Called as ``step(live, fresh)`` after validation: copy what it owns from fresh to live."""

_steps: list[ReloadStep] = []
_reload_lock = threading.Lock()


def add_reload_step(step: ReloadStep) -> None:
    """Run ``step(live, fresh)`` on every successful reload, after the built-in steps.

    This is the place for state a registry does not own (``_configure`` forgets the
    config error the registry stood in for): a step must not fail, since validation is
    over when it runs.
    """
    if step not in _steps:
        _steps.append(step)


def reload_registry(registry: Reloadable, config: ConfigSource | None = None) -> None:
    """Apply ``config`` (default: the file the registry was loaded from) to ``registry``.

    Atomic: the config is validated first by building a fresh Registry from it, so an
    invalid one raises ``ConfigError`` and changes nothing. Breaker states and windows
    are kept. A dependency missing from the new config keeps its current settings.
    """
    if config is None:
        config = registry.source or os.environ.get(CONFIG_ENV_VAR)
        if not config:
            raise ConfigError(
                f"nothing to reload from: this registry was not loaded from a file and "
                f"{CONFIG_ENV_VAR} is not set; pass a path or a dict"
            )
    with _reload_lock:
        try:
            fresh = registry.from_config(config, clock=registry.clock)
        except ConfigError as exc:
            emit_event(registry, "reload", f"failed: {exc}")
            raise
        chaos_before = _chaos_active(registry)
        registry._apply_reloaded(fresh)
        for step in tuple(_steps):
            step(registry, fresh)
    _log.info(
        "reloaded the resilience config%s: %d dependencies",
        f" from {fresh.source}" if fresh.source else "",
        len(fresh),
    )
    emit_event(registry, "reload", "applied")
    chaos_after = _chaos_active(registry)
    for name in sorted(chaos_before.keys() | chaos_after.keys()):
        if chaos_before.get(name) != chaos_after.get(name):
            emit_event(registry, "chaos", "on" if name in chaos_after else "off", name)


def _chaos_active(registry: Reloadable) -> dict[str, Any]:
    """The fault spec of each dependency a chaos drill acts on now (from the settings)."""
    settings = registry.chaos_settings
    return {name: spec for name in registry.breakers() if (spec := settings.spec_for(name))}


# -- triggers under auto-instrumentation ----------------------------------------------


class ReloadTrigger:
    """A worker thread that reloads the live registry on request (SIGHUP) and, with
    ``poll_seconds``, whenever the config file's content changed. ``registry`` answers
    the live registry at each reload (``get_registry``, handed in by auto-instrumentation).

    A failed reload is logged once (per SIGHUP, or per distinct broken file content when
    polling) and the old config stays.
    """

    def __init__(
        self,
        path: str,
        *,
        registry: Callable[[], Reloadable],
        poll_seconds: float | None = None,
    ) -> None:
        self.path = path
        self.poll_seconds = poll_seconds
        self._registry = registry
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._requested = False
        self._last_digest = _digest(path)
        self._settling: bytes | None = None  # new content seen once, not yet applied
        self._thread: threading.Thread | None = None

    def live_registry(self) -> Reloadable:
        return self._registry()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="otel-resilience-reload", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def request(self) -> None:
        """Reload as soon as the worker wakes (safe to call from a signal handler)."""
        self._requested = True
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            requested, self._requested = self._requested, False
            self.poll(requested)

    def poll(self, requested: bool = False) -> bool:
        """One look at the file (what the worker does on each wake); True when reloaded.

        A SIGHUP (``requested``) reloads at once. A change seen by polling reloads once
        the file has stopped changing, that is when two polls in a row read the same
        new content: an editor or a deploy writing the file in several steps is never
        caught half-way (an empty or cut-off file would load as a different config).
        A missing file (being replaced) is waited for.
        """
        digest = _digest(self.path)
        if requested:
            self._last_digest, self._settling = digest, None
            self.reload("SIGHUP")
            return True
        if digest is None or digest == self._last_digest:  # unchanged, or being replaced
            self._settling = None
            return False
        if digest != self._settling:
            self._settling = digest  # changed since the last poll: wait for it to settle
            return False
        self._last_digest, self._settling = digest, None
        self.reload("file change")
        return True

    def reload(self, why: str) -> bool:
        """Reload now; True when applied. Never raises."""
        try:
            reload_registry(self.live_registry(), self.path)
        except ConfigError as exc:
            _log.error("config reload (%s) failed, the old config stays: %s", why, exc)
            return False
        except Exception:
            _log.exception("config reload (%s) failed, the old config stays", why)
            return False
        return True


def _digest(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).digest()
    except OSError:
        return None


# The installed trigger, in a one-slot list (replaced, never appended to).
_triggers: list[ReloadTrigger] = []


def install_reload_triggers(registry: Callable[[], Reloadable]) -> ReloadTrigger | None:
    """SIGHUP (and ``$OTEL_RESILIENCE_RELOAD_SECONDS`` polling) reloads ``$OTEL_RESILIENCE_CONFIG``
    into ``registry()``, the live registry at the time of each reload.

    Does nothing without a config file. The SIGHUP handler is installed only from the main
    thread and chains to a Python handler that was there before.
    """
    path = os.environ.get(CONFIG_ENV_VAR)
    if not path:
        return None
    poll_seconds: float | None = None
    raw = os.environ.get(RELOAD_SECONDS_ENV, "").strip()
    if raw:
        try:
            poll_seconds = float(raw)
            if not poll_seconds > 0:
                raise ValueError(raw)
        except ValueError:
            _log.warning(
                "%s must be a number of seconds > 0, got %r; not polling", RELOAD_SECONDS_ENV, raw
            )
            poll_seconds = None
    for old in _triggers:
        old.stop()
    trigger = ReloadTrigger(path, registry=registry, poll_seconds=poll_seconds)
    trigger.start()
    _triggers[:] = [trigger]
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
        previous = signal.getsignal(signal.SIGHUP)

        def on_sighup(signum: int, frame: FrameType | None) -> None:
            for current in _triggers:
                current.request()
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGHUP, on_sighup)
    return trigger


def _restart_in_child() -> None:
    # A forked child has no threads but the one that forked: start the worker again.
    for trigger in _triggers:
        trigger._wake = threading.Event()
        trigger.start()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_in_child)
