"""Where guards sit: the innermost layer of a patched client method, under any tracing.

OpenTelemetry's instrumentations patch client methods with ``wrapt`` and take their
patch off with ``unwrap``, which removes only the *outermost* layer. A guard laid on top
of an instrumentation would therefore be what ``uninstrument()`` removes, leaving the
tracing behind (and a later ``instrument()`` would trace twice). So a guard is always
put directly around the original method, below every ``wrapt`` layer already there:

- installed after an instrumentation, it is spliced in under the instrumentation's
  wrapper (the wrapper's ``__wrapped__`` is repointed at the guard);
- installed before one, the instrumentation wraps it like any method.

Either way ``uninstrument()`` strips the tracing and leaves the guard, ``instrument()``
traces once, and the client span is current while the guard runs, so the guard marks
it for the span processor (``_context``). ``Installer.uninstall`` finds its own layers
wherever they are in the chain and takes only them out.

Where an instrumentation does not use ``wrapt`` (requests replaces ``Session.send`` with
a closure, grpc.aio replaces its channel factory), the guard hooks one level below the
method the instrumentation patches instead; the client modules say where.

A guarded plain (sync) function or method gets a plain function as its layer, which
Python binds like the method it replaces, at no cost of ours per call: a ``wrapt`` layer
is built anew for every call through an instance (about 2000 instructions). Anything
else (a coroutine function, a classmethod, a builtin) gets a ``wrapt`` layer
(``GuardLayer``). Either kind names its ``Installer`` and holds what it guards in
``__wrapped__``, which the chain code below reads and repoints alike.
"""

from __future__ import annotations

import functools
import inspect
import logging
import types
from collections.abc import Callable
from typing import Any

import wrapt

from .._context import PROBING
from .._guard import Entry, KeptDependency, guarded_method
from .._registry import Registry

__all__ = [
    "GuardLayer",
    "Installer",
    "guard_layer",
    "innermost",
    "installer_of",
    "instrument_clients",
]

_log = logging.getLogger(__name__)

# wrapt 2 names the base of its proxies BaseObjectProxy; wrapt 1 has ObjectProxy only.
_Proxy: type[Any] = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)

Wrapper = Callable[[Any, Any, Any, Any], Any]


class GuardLayer(wrapt.FunctionWrapper):  # type: ignore[type-arg]  # any wrapped callable
    """A guard's ``wrapt`` layer, told apart from the instrumentations' layers."""

    _self_installer: Installer

    # Named explicitly: without it, wrapt's C extension binds a subclass's wrapper to each
    # instance through a slower lookup (0.88 µs a call instead of 0.52, wrapt 2.x).
    __bound_function_wrapper__ = wrapt.BoundFunctionWrapper


def _stored(owner: Any, attribute: str) -> Any:
    """The attribute as stored on ``owner`` (no descriptor binding), or None."""
    try:
        return inspect.getattr_static(owner, attribute)
    except AttributeError:
        return None


# The attribute naming a plain guard layer's Installer.
_INSTALLER = "_otel_resilience_installer"
_probing = PROBING.get


def _guard_layer(node: Any) -> GuardLayer | None:
    """The ``wrapt`` guard layer ``node`` is, or is a binding of.

    OpenTelemetry's ``unwrap`` stores ``getattr(owner, attribute).__wrapped__``; under
    wrapt 2 that is the inner layer bound to ``None`` (a ``BoundFunctionWrapper`` whose
    ``_self_parent`` is the layer), not the layer itself.
    """
    if isinstance(node, GuardLayer):
        return node
    parent = getattr(node, "_self_parent", None) if isinstance(node, _Proxy) else None
    return parent if isinstance(parent, GuardLayer) else None


def guard_layer(node: Any) -> Any:
    """The guard layer (either kind) ``node`` is, or is a binding of; None for anything
    else."""
    if type(node) is types.FunctionType:  # not isinstance: a wrapt proxy passes for one
        return node if _INSTALLER in node.__dict__ else None
    return _guard_layer(node)


def installer_of(layer: Any) -> Installer:
    """The ``Installer`` of a guard layer (``guard_layer``'s answer)."""
    if isinstance(layer, GuardLayer):
        return layer._self_installer
    installer: Installer = layer.__dict__[_INSTALLER]
    return installer


def _plain_layer(
    original: Any,
    wrapper: Wrapper,
    installer: Installer,
    is_method: bool,
    kept: KeptDependency | None = None,
) -> Any:
    """A plain function calling ``wrapper(wrapped, instance, args, kwargs)`` as a ``wrapt``
    layer of ``original`` would while the guards apply (``Installer.active``), and
    ``original`` itself otherwise. For a method (``is_method``), ``wrapped`` is ``original``
    bound to the instance; a method whose guard keeps its dependency on the instance
    (``kept``) gets ``_guard.guarded_method``, which also runs the success path of a
    closed breaker itself. What it calls is read from its ``__wrapped__``, so it is
    repointed like a ``wrapt`` layer."""
    if is_method and kept is not None:
        layer = guarded_method(kept, wrapper, installer, _probing)
    elif is_method:

        def layer(*args: Any, **kwargs: Any) -> Any:
            wrapped = layer.__wrapped__  # type: ignore[attr-defined]
            if not args or not installer.enabled or _probing():
                return wrapped(*args, **kwargs)  # (no instance: fails as the method would)
            instance = args[0]
            return wrapper(wrapped.__get__(instance, type(instance)), instance, args[1:], kwargs)

    else:

        def layer(*args: Any, **kwargs: Any) -> Any:
            wrapped = layer.__wrapped__  # type: ignore[attr-defined]
            if not installer.enabled or _probing():
                return wrapped(*args, **kwargs)
            return wrapper(wrapped, None, args, kwargs)

    functools.update_wrapper(layer, original)
    layer.__dict__[_INSTALLER] = installer
    return layer


def innermost(owner: Any, attribute: str) -> tuple[Any, Any]:
    """``(parent, node)``: the innermost non-proxy under ``owner.attribute`` and the layer
    holding it (None when the attribute itself is not wrapped). A guard layer left by an
    uninstalled ``Installer`` is stepped over (its ``__wrapped__`` is what it guarded)."""
    parent = None
    node = _stored(owner, attribute)
    while True:
        layer = guard_layer(node)
        if layer is None and not isinstance(node, _Proxy):
            break  # the original
        if layer is not None and installer_of(layer).enabled:
            break  # a live guard: the new one goes under nothing else
        inner = getattr(layer if layer is not None else node, "__wrapped__", None)
        if inner is None:
            break
        if layer is not None:  # a dead guard: splice it out of the chain
            if parent is None:
                setattr(owner, attribute, inner)
            else:
                parent.__wrapped__ = inner
            node = inner
            continue
        parent, node = node, inner
    return parent, node


class Installer:
    """Installs one ``configure()``'s guards as innermost layers and removes them again.

    A removed guard layer that something still holds (a bound method captured earlier)
    passes calls straight through, so uninstalling never leaves a half-guarded client.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.enabled = True
        self._layers: list[tuple[Any, str, Any]] = []
        self._undo: list[Callable[[], None]] = []

    def wrap(
        self, owner: Any, attribute: str, wrapper: Wrapper, *, kept: KeptDependency | None = None
    ) -> None:
        """Guard ``owner.attribute`` with ``wrapper(wrapped, instance, args, kwargs)``,
        which runs only while the guards apply (``active()``). ``kept``: the wrapper keeps
        the dependency on the instance (``_guard.guarded_method``)."""

        def gate(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if not self.enabled or PROBING.get():
                return wrapped(*args, **kwargs)
            return wrapper(wrapped, instance, args, kwargs)

        parent, original = innermost(owner, attribute)
        if original is None:
            raise AttributeError(f"{owner!r} has no attribute {attribute!r} to guard")
        layer: Any
        if _plain(original):  # the gate is the layer's own first step
            layer = _plain_layer(original, wrapper, self, inspect.isclass(owner), kept)
        else:
            layer = GuardLayer(original, gate)
            layer._self_installer = self
        if parent is None:
            setattr(owner, attribute, layer)
        else:
            parent.__wrapped__ = layer
        self._layers.append((owner, attribute, layer))

    def active(self) -> bool:
        """Whether guards apply now (installed, and not inside a health check's own call)."""
        return self.enabled and not PROBING.get()

    def on_uninstall(self, undo: Callable[[], None]) -> None:
        """Run ``undo`` when the guards are uninstalled (for hooks that are not layers)."""
        self._undo.append(undo)

    def uninstall(self) -> None:
        """Take this installer's layers out, wherever they are in their chains."""
        self.enabled = False
        for owner, attribute, layer in reversed(self._layers):
            try:
                _remove(owner, attribute, layer)
            except Exception:
                _log.warning("could not remove the guard of %s.%s", owner, attribute, exc_info=True)
        self._layers.clear()
        for undo in reversed(self._undo):
            try:
                undo()
            except Exception:
                _log.warning("could not undo a client hook", exc_info=True)
        self._undo.clear()

    def entry(self, name: str) -> Entry:
        return self.registry._entry(name)


def _plain(original: Any) -> bool:
    """Whether ``original`` gets a plain function layer: a plain sync function (a method
    stored on a class, or a module's function), not one that makes a coroutine or a
    generator (its layer would hide that from ``inspect``)."""
    return (
        type(original) is types.FunctionType
        and not inspect.iscoroutinefunction(original)
        and not inspect.isgeneratorfunction(original)
        and not inspect.isasyncgenfunction(original)
    )


def _remove(owner: Any, attribute: str, layer: Any) -> None:
    parent = None
    node = _stored(owner, attribute)
    while True:
        found = guard_layer(node)
        if found is layer:
            break
        if found is None and not isinstance(node, _Proxy):
            return  # gone, or replaced by something that is not a chain of layers: not ours
        parent, node = node, getattr(node, "__wrapped__", None)
    if parent is None:
        setattr(owner, attribute, layer.__wrapped__)
    else:
        parent.__wrapped__ = layer.__wrapped__


def instrument_clients(clients: Any, tracer_provider: Any) -> Callable[[], None]:
    """Switch on the OpenTelemetry instrumentation of every installed client in ``clients``
    (``instrumentation.CLIENTS``) that is not instrumented yet; returns the undo.

    An instrumentor is a process-wide singleton that ignores a second ``instrument()``,
    so one switched on here yields to the application: the application's own later
    ``instrument(request_hook=..., ...)`` takes ours off and instruments with its options.
    """
    import importlib

    switched: list[Any] = []
    for library, _, _, instrumentors in clients:
        try:
            importlib.import_module(library)
        except ImportError:
            continue
        for spec in instrumentors:
            module_name, _, class_name = spec.partition(":")
            try:
                module = importlib.import_module(f"opentelemetry.instrumentation.{module_name}")
                instrumentor = getattr(module, class_name)()
            except ImportError:
                continue
            except Exception:
                _log.warning("could not load %s", class_name, exc_info=True)
                continue
            if instrumentor.is_instrumented_by_opentelemetry:
                continue  # the application's own: left as it is
            try:
                instrumentor.instrument(tracer_provider=tracer_provider)
            except Exception:
                _log.warning("could not switch on %s", class_name, exc_info=True)
                continue
            if instrumentor.is_instrumented_by_opentelemetry:
                _yield_to_application(instrumentor, switched)
                switched.append(instrumentor)

    def undo() -> None:
        for instrumentor in switched:
            instrumentor.__dict__.pop("instrument", None)
            if instrumentor.is_instrumented_by_opentelemetry:
                try:
                    instrumentor.uninstrument()
                except Exception:
                    _log.warning("could not switch off %r", instrumentor, exc_info=True)
        switched.clear()

    return undo


def _yield_to_application(instrumentor: Any, switched: list[Any]) -> None:
    """Make the application's next ``instrumentor.instrument(...)`` replace ours."""

    def instrument(**options: Any) -> Any:
        instrumentor.__dict__.pop("instrument", None)  # the class's method from now on
        if instrumentor in switched:
            switched.remove(instrumentor)
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        return instrumentor.instrument(**options)

    instrumentor.instrument = instrument
