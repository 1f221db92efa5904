"""Hot reload: a new config applied to a live registry in place, and what triggers it.

``Registry.reload(config)`` validates the new config by building a fresh Registry from it
(the config loader's full checks; a ``ConfigError`` then changes nothing), and only then
applies it to the live registry step by step: breaker policies (state and windows kept),
dependencies (criticality, match, fallback, retry budget; new ones added), concurrency
limits (a limiter whose policy is unchanged keeps its calls in flight and learnt limit)
and chaos settings (a change is reported as a ``chaos`` on/off event), and registry
settings. A feature with state of its own adds a step with ``add_reload_step``.

Under auto-instrumentation ``install_reload_triggers`` reloads the file named by
``$OTEL_RESILIENCE_CONFIG`` on SIGHUP, and every ``$OTEL_RESILIENCE_RELOAD_SECONDS`` when
the file changed. The reload runs on a worker thread, never in the signal handler: the
handler may interrupt the main thread while it holds a breaker's lock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from ._config import CONFIG_ENV_VAR
from ._errors import ConfigError
from ._events import emit_event
from ._registry import load_config

if TYPE_CHECKING:
    from ._dependency import Dependency
    from ._guard import Entry
    from ._registry import Registry

__all__ = [
    "RELOAD_SECONDS_ENV",
    "ReloadStep",
    "ReloadTrigger",
    "add_reload_step",
    "install_reload_triggers",
    "reload_registry",
]

_log = logging.getLogger(__name__)

RELOAD_SECONDS_ENV = "OTEL_RESILIENCE_RELOAD_SECONDS"

ReloadStep = Callable[["Registry", "Registry"], None]
"""Called as ``step(live, fresh)`` after validation: copy what it owns from fresh to live."""

_steps: list[ReloadStep] = []
_reload_lock = threading.Lock()


def add_reload_step(step: ReloadStep) -> None:
    """Run ``step(live, fresh)`` on every successful reload, after the built-in steps.

    This is the place for settings with state of their own (concurrency limits, chaos
    drills): a step must not fail, since validation is over when it runs.
    """
    if step not in _steps:
        _steps.append(step)


def reload_registry(
    registry: Registry, config: Mapping[str, Any] | str | os.PathLike[str] | None = None
) -> None:
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
            fresh = load_config(config, clock=registry.clock)
        except ConfigError as exc:
            emit_event(registry, "reload", f"failed: {exc}")
            raise
        chaos_before = _chaos_active(registry)
        _apply_dependencies(registry, fresh)
        registry.chaos_settings = fresh.chaos_settings
        with registry._lock:
            for entry in registry._entries.values():
                registry._equip(entry)  # limits kept or replaced, chaos from the new settings
        registry.service = fresh.service
        registry.telemetry = fresh.telemetry
        registry.admin_token_env = fresh.admin_token_env
        if fresh.source is not None:
            registry.source = fresh.source
        for step in tuple(_steps):
            step(registry, fresh)
        _after_reload(registry)
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


def _chaos_active(registry: Registry) -> dict[str, Any]:
    """The fault spec of each dependency a chaos drill acts on now (from the settings)."""
    settings = registry.chaos_settings
    return {name: spec for name in registry.breakers() if (spec := settings.spec_for(name))}


def _apply_dependencies(live: Registry, fresh: Registry) -> None:
    for dependency in fresh.dependencies:
        if dependency.name not in live:
            live.add(dependency)
            continue
        entry = live._entry(dependency.name)
        was_observe_only = entry.dependency.observe_only
        reloaded = _keep_fallback_state(entry.dependency, dependency)
        bind = getattr(reloaded.fallback, "bind_breaker", None)
        if bind is not None:  # a new memory cache follows recovery of the same breaker
            bind(entry.breaker)
        entry.breaker.apply_policy(reloaded.policy)
        _rebind(entry, reloaded)
        if was_observe_only:
            # An auto-discovered dependency is now declared: its breaker protects from now on.
            entry.breaker.reset()
    live._rebuild_classifier()


def _rebind(entry: Entry, dependency: Dependency) -> None:
    """Point ``entry`` at the reloaded dependency and recompute its hot-path flags."""
    entry.dependency = dependency
    entry.refresh()


def _keep_fallback_state(old: Dependency, new: Dependency) -> Dependency:
    """Keep the live in-process cache when the reloaded fallback is the same kind of cache,
    so a reload during an outage does not empty what the fallback is serving."""
    from ._memory_cache import MemoryCache

    before, after = old.fallback, new.fallback
    if (
        isinstance(before, MemoryCache)
        and type(after) is type(before)
        and _cache_settings(before) == _cache_settings(after)
    ):
        return dataclasses.replace(new, fallback=before)
    if isinstance(before, MemoryCache) and isinstance(after, MemoryCache):
        after.reach_redis_as(before)  # a new cache replays through the same Redis
    return new


def _cache_settings(cache: Any) -> tuple[Any, ...]:
    return tuple(
        getattr(cache, name, None)
        for name in (
            "max_entries",
            "default_ttl_seconds",
            "max_bytes",
            "replay_writes",
            "max_replay_writes",
        )
    )


def _after_reload(registry: Registry) -> None:
    """Forget the config error ``registry`` stood in for: a fixed file was applied. (Span
    processors drop their cached breaker flags on the reload event.)"""
    from ._configure import _wiring

    with _wiring.lock:
        registry._config_error = None
        _wiring.config_error_logged = None


# -- triggers under auto-instrumentation ----------------------------------------------


class ReloadTrigger:
    """A worker thread that reloads the live registry on request (SIGHUP) and, with
    ``poll_seconds``, whenever the config file's content changed.

    A failed reload is logged once (per SIGHUP, or per distinct broken file content when
    polling) and the old config stays.
    """

    def __init__(
        self,
        path: str,
        *,
        poll_seconds: float | None = None,
        registry: Callable[[], Registry] | None = None,
    ) -> None:
        self.path = path
        self.poll_seconds = poll_seconds
        self._registry = registry
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._requested = False
        self._last_digest = _digest(path)
        self._thread: threading.Thread | None = None

    def live_registry(self) -> Registry:
        if self._registry is not None:
            return self._registry()
        from ._configure import get_registry

        return get_registry()

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
            digest = _digest(self.path)
            if not requested and digest == self._last_digest:
                continue
            self._last_digest = digest
            self.reload("SIGHUP" if requested else "file change")

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


def install_reload_triggers() -> ReloadTrigger | None:
    """SIGHUP (and ``$OTEL_RESILIENCE_RELOAD_SECONDS`` polling) reloads ``$OTEL_RESILIENCE_CONFIG``.

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
    trigger = ReloadTrigger(path, poll_seconds=poll_seconds)
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
