"""``otel-resilience demo``: the example chat service riding through five outages.

Starts its own servers (redis-server, PostgreSQL, the analytics stub, an OTLP collector
stand-in) and the chat service (uvicorn, in this process), drives simulated users over
WebSockets, injects the outages one after another and undoes them, shows a live terminal
view, and prints a summary per scenario at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ._servers import (
    CollectorStandIn,
    FaultProxy,
    PostgresCluster,
    RedisProcess,
    call_quietly,
    free_port,
    port_open,
)

__all__ = ["SCENARIOS", "run_demo"]

SCENARIOS = {
    "redis-killed": ("Redis killed", "redis"),
    "analytics-500": ("analytics answering 500", "analytics"),
    "collector-blackholed": ("OTLP collector black-holed", "telemetry"),
    "redis-hung": ("Redis hung (SIGSTOP)", "redis"),
    "postgres-down": ("PostgreSQL down", "postgres"),
}
_COLOURS = {
    "closed": "green",
    "half_open": "yellow",
    "open": "red",
    "forced_open": "red",
    "disabled": "dim",
    "healthy": "green",
    "degraded": "yellow",
    "unhealthy": "red",
}


@dataclass
class _Message:
    scenario: str
    sent_at: float
    events: list[tuple[str, float]] = field(default_factory=list)
    outcome: str = "lost"  # completed, failed_fast, lost
    done: bool = False  # answered, failed fast, or given up on


@dataclass
class _ScenarioRun:
    key: str
    title: str
    dependency: str
    injected_at: float | None = None
    recovered_at: float | None = None
    opened_after: float | None = None
    closed_after: float | None = None


class _Infrastructure:
    """The servers behind the chat service and the faults the demo injects into them."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.notes: list[str] = []
        self.redis: RedisProcess | None = None
        self.redis_url = ""
        self.cluster: PostgresCluster | None = None
        self.proxy: FaultProxy | None = None
        self.postgres_dsn = "memory://"
        self.collector = CollectorStandIn()
        self.collector_up = False
        from .analytics_stub import AnalyticsStub

        self.analytics = AnalyticsStub(free_port())
        self.chat: Any = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is not None:
            self.redis = RedisProcess(binary)
            self.redis.start()
            self.redis_url = self.redis.url
        else:
            self.redis_url = f"redis://127.0.0.1:{free_port()}/0"
            self.notes.append(
                "redis-server is not installed: Redis is down throughout and sessions live in "
                "the memory fallback; the Redis scenarios are skipped"
            )
        target = self._postgres()
        if target is not None:
            self.proxy = FaultProxy("127.0.0.1", target[1]).start()
            self.postgres_dsn = f"postgresql://postgres@127.0.0.1:{self.proxy.port}/{target[0]}"
        self.analytics.start()
        self.collector_up = self.collector.up()
        if not self.collector_up:
            self.notes.append("grpcio is missing: no OTLP collector stand-in, telemetry skipped")

    def _postgres(self) -> tuple[str, int] | None:
        bin_dir = PostgresCluster.find_bin_dir()
        if bin_dir is not None:
            cluster = PostgresCluster(bin_dir)
            try:
                self.console.print(f"[dim]starting PostgreSQL from {bin_dir} (initdb) ...[/]")
                cluster.start()
            except Exception as exc:
                cluster.stop()
                self.notes.append(f"could not start an own PostgreSQL ({exc})")
            else:
                self.cluster = cluster
                return "postgres", cluster.port
        if port_open(5432):
            self.notes.append("using the PostgreSQL at 127.0.0.1:5432 (database postgres)")
            return "postgres", 5432
        self.notes.append(
            "PostgreSQL is not installed and nothing listens on 127.0.0.1:5432: messages go to "
            "an in-process stand-in behind the same breaker (install PostgreSQL for the real one)"
        )
        return None

    def available(self, key: str) -> bool:
        if key.startswith("redis"):
            return self.redis is not None
        if key == "collector-blackholed":
            return self.collector_up
        return True

    def inject(self, key: str) -> None:
        if key == "redis-killed" and self.redis is not None:
            self.redis.kill()
        elif key == "redis-hung" and self.redis is not None:
            self.redis.pause()
        elif key == "analytics-500":
            self.analytics.set_mode("error")
        elif key == "collector-blackholed":
            self.collector.blackhole()
        elif key == "postgres-down":
            if self.proxy is not None:
                self.proxy.stop()
            elif self.chat is not None and self.chat.memory is not None:
                self.chat.memory.down = True

    def recover(self, key: str) -> None:
        if key == "redis-killed" and self.redis is not None:
            self.redis.start()
        elif key == "redis-hung" and self.redis is not None:
            self.redis.resume()
        elif key == "analytics-500":
            self.analytics.set_mode("ok")
        elif key == "collector-blackholed":
            self.collector.up()
        elif key == "postgres-down":
            if self.proxy is not None:
                self.proxy.start()
            elif self.chat is not None and self.chat.memory is not None:
                self.chat.memory.down = False

    def stop(self) -> None:
        if self.redis is not None:
            call_quietly(self.redis.kill)
        if self.proxy is not None:
            call_quietly(self.proxy.close)
        if self.cluster is not None:
            call_quietly(self.cluster.stop)
        call_quietly(self.analytics.stop)
        call_quietly(self.collector.close)


class _Server:
    """uvicorn serving the app in a thread, stopped cleanly."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.port = port
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="chat-service", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the chat service did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class _Load:
    """Simulated users and what they saw."""

    def __init__(self, base: str, users: int) -> None:
        self.base = base
        self.users = users
        self.scenario = "baseline"
        self.messages: list[_Message] = []
        self.notices: dict[str, int] = {"service_degraded": 0, "service_restored": 0}
        self.events = 0
        self.stop = asyncio.Event()

    async def _login(self, name: str) -> str:
        import httpx

        async with httpx.AsyncClient(base_url=self.base, timeout=5) as client:
            response = await client.post("/login", json={"user": name})
            response.raise_for_status()
            token: str = response.json()["token"]
            return token

    async def user(self, index: int) -> None:
        import websockets

        name = f"user{index:02d}"
        await asyncio.sleep(index * 0.05)
        ws_url = self.base.replace("http://", "ws://") + "/ws"
        while not self.stop.is_set():
            try:
                token = await self._login(name)
                async with websockets.connect(ws_url, open_timeout=5) as ws:
                    await ws.send(json.dumps({"type": "auth", "token": token}))
                    await asyncio.wait_for(ws.recv(), 5)  # connected
                    while not self.stop.is_set():
                        await self._say(ws, name)
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(self.stop.wait(), random.uniform(0.2, 0.6))
            except (OSError, asyncio.TimeoutError, Exception):
                if self.stop.is_set():
                    return
                await asyncio.sleep(0.3)

    def begin(self, scenario: str) -> None:
        """From now on messages count for ``scenario``, and so do those still in flight.

        A message sent before an outage and answered (or not) after it began met that
        outage: counting it for the scenario before would charge one outage's casualties
        (a reply that could not be stored once PostgreSQL went down) to another.
        """
        self.scenario = scenario
        for message in self.messages[-4 * self.users :]:
            if not message.done:
                message.scenario = scenario

    async def _say(self, ws: Any, name: str) -> None:
        message_id = f"{name}-{uuid.uuid4().hex[:8]}"
        record = _Message(self.scenario, time.monotonic())
        self.messages.append(record)
        try:
            await self._exchange(ws, name, message_id, record)
        finally:
            record.done = True

    async def _exchange(self, ws: Any, name: str, message_id: str, record: _Message) -> None:
        await ws.send(json.dumps({"type": "message", "id": message_id, "text": "hello agent"}))
        deadline = record.sent_at + 5.0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return  # lost
            event = json.loads(await asyncio.wait_for(ws.recv(), remaining))
            kind = event.get("type")
            if kind in self.notices:
                self.notices[kind] += 1
                continue
            if event.get("message_id") != message_id or event.get("user") != name:
                continue  # never happens: counted as not delivered for this message
            self.events += 1
            record.events.append((kind, time.monotonic() - record.sent_at))
            if kind == "agent_completed":
                record.outcome = "completed"
                return
            if kind == "error":
                record.outcome = "failed_fast"
                return


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _view(chat: Any, load: _Load, status: str, rate: float) -> Group:
    state = chat.state()
    table = Table(title_justify="left", expand=False)
    for column in ("dependency", "criticality", "breaker", "failure rate", "fallbacks"):
        table.add_column(column)
    for name, breaker in state["breakers"].items():
        if breaker["criticality"] == "observe-only":
            continue
        colour = _COLOURS.get(breaker["state"], "white")
        table.add_row(
            name,
            breaker["criticality"],
            Text(breaker["state"], style=f"bold {colour}"),
            f"{breaker['failure_rate']:.0%}",
            str(state["fallbacks"].get(name, 0)),
        )
    health = state["health"]["status"]
    stats = state["stats"]
    done = sum(m.outcome == "completed" for m in load.messages)
    line = Text.assemble(
        ("health ", "bold"),
        (health, f"bold {_COLOURS.get(health, 'white')}"),
        f"  events/s {rate:5.1f}  messages {len(load.messages)}  completed {done}"
        f"  failed fast {stats['failed_fast']}",
    )
    second = Text(
        f"analytics kept {stats['analytics_kept']} flushed {stats['analytics_flushed']}"
        f"   notices {sum(load.notices.values())}"
    )
    return Group(Text(status, style="bold cyan"), table, line, second)


_SUMMARY_COLUMNS = (
    "scenario",
    "dependency",
    "messages",
    "golden path",
    "failed fast",
    "WS delivery",
    "latency p99",
    "time to open",
    "time to recover",
)


def _fates(messages: list[_Message]) -> str:
    """What became of the messages that neither completed nor failed fast."""
    fates: dict[str, int] = {}
    for message in messages:
        if message.outcome != "lost":
            continue
        last = f"after {message.events[-1][0]}" if message.events else "with no event"
        fates[last] = fates.get(last, 0) + 1
    return ", ".join(f"{count} lost {where}" for where, count in sorted(fates.items()))


def _misses(
    key: str, dependency: str, messages: list[_Message], latency: float | None
) -> list[str]:
    """Each target ``key`` missed, naming the figure, its value and the target."""
    completed = sum(m.outcome == "completed" for m in messages)
    expected = sum(5 if any(k == "agent_started" for k, _ in m.events) else 1 for m in messages)
    delivered = sum(len(m.events) for m in messages)
    completion = completed / len(messages)
    delivery = delivered / expected if expected else 1.0
    misses = []
    if dependency != "postgres" and completion < 1.0:
        misses.append(
            f"{key}: golden path {completion:.1%} ({completed} of {len(messages)} messages), "
            f"target 100%; {_fates(messages) or 'the others failed fast'}"
        )
    if dependency != "postgres" and delivery < 1.0:
        misses.append(
            f"{key}: WebSocket delivery {delivery:.1%} ({delivered} of {expected} events), "
            "target 100%"
        )
    if latency is not None and latency > 2.0:
        misses.append(f"{key}: event latency p99 {latency:.2f}s, target under 2 s")
    return misses


def _pack(parts: list[str], width: int) -> list[str]:
    """``parts`` joined by ", " in indented lines of at most ``width``, no part split."""
    lines = ["  "]
    for index, part in enumerate(parts):
        piece = part + ("," if index < len(parts) - 1 else "")
        if lines[-1].strip() and len(f"{lines[-1]} {piece}") > width:
            lines.append("    ")
        lines[-1] = f"{lines[-1]} {piece}" if lines[-1].strip() else lines[-1] + piece
    return lines


def _needed_width(rows: list[list[str]]) -> int:
    """The width a rich table of ``rows`` under the summary's headers needs, borders included."""
    widths = [len(header) for header in _SUMMARY_COLUMNS]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    return sum(widths) + 3 * len(widths) + 1


def _summary(runs: list[_ScenarioRun], load: _Load, console: Console) -> list[str]:
    """Print the summary per scenario; the targets missed (empty when every one was met).

    A table when the terminal is wide enough for it, else one short block per scenario:
    nothing is cut or wrapped mid-cell at 80 columns.
    """
    rows: list[list[str]] = []
    misses: list[str] = []
    for key, dependency, run in [("baseline", "-", None)] + [
        (run.key, run.dependency, run) for run in runs
    ]:
        messages = [m for m in load.messages if m.scenario == key]
        if not messages:
            continue
        completed = sum(m.outcome == "completed" for m in messages)
        expected = sum(5 if any(k == "agent_started" for k, _ in m.events) else 1 for m in messages)
        delivered = sum(len(m.events) for m in messages)
        latency = _p99([t for m in messages for _, t in m.events])
        rows.append(
            [
                key,
                dependency,
                str(len(messages)),
                f"{completed / len(messages):.1%}",
                str(sum(m.outcome == "failed_fast" for m in messages)),
                f"{delivered / expected if expected else 1.0:.1%}",
                _seconds(latency),
                _seconds(run.opened_after if run else None),
                _seconds(run.closed_after if run else None),
            ]
        )
        misses += _misses(key, dependency, messages, latency)
    console.print()  # the live view's last line may have no newline of its own
    if _needed_width(rows) <= console.width:
        table = Table(title="summary per scenario", title_justify="left")
        for column in _SUMMARY_COLUMNS:
            table.add_column(column, no_wrap=True)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        console.print("[bold]summary per scenario[/]")
        for row in rows:
            console.print(Text(f"{row[0]} ({row[1]})", style="bold"))
            pairs = [f"{h} {c}" for h, c in zip(_SUMMARY_COLUMNS[2:], row[2:], strict=True)]
            for line in _pack(pairs, console.width):
                console.print(Text(line), soft_wrap=True)
    console.print(
        "targets: golden path 100% with any optional dependency down, WebSocket delivery "
        "100%, event latency p99 < 2 s; with PostgreSQL down each message fails fast with "
        "an error event (counted under 'failed fast', delivered)."
    )
    console.print(
        f"users were told: {load.notices['service_degraded']} service_degraded and "
        f"{load.notices['service_restored']} service_restored events"
    )
    return misses


async def _drive(  # noqa: PLR0917 - private, called once with everything it drives
    infra: _Infrastructure,
    chat: Any,
    load: _Load,
    runs: list[_ScenarioRun],
    duration: float,
    console: Console,
    transitions: list[tuple[float, str, str]],
) -> None:
    tasks = [asyncio.create_task(load.user(i)) for i in range(load.users)]
    baseline = min(6.0, duration * 0.1)
    per = (duration - baseline) / max(len(runs), 1)
    outage = per * 0.5
    started = time.monotonic()
    schedule: list[tuple[float, Callable[[], None]]] = []
    status = {"text": "baseline: every dependency up"}

    def begin(run: _ScenarioRun) -> Callable[[], None]:
        def act() -> None:
            load.begin(run.key)
            run.injected_at = time.monotonic()
            infra.inject(run.key)
            status["text"] = f"outage: {run.title}"
            console.print(f"[red]>> {run.title}[/] ({_clock(started)})")

        return act

    def end(run: _ScenarioRun) -> Callable[[], None]:
        def act() -> None:
            run.recovered_at = time.monotonic()
            infra.recover(run.key)
            status["text"] = f"recovery: {run.title} undone"
            console.print(f"[green]<< {run.title} undone[/] ({_clock(started)})")

        return act

    for index, run in enumerate(runs):
        at = baseline + index * per
        schedule += [(at, begin(run)), (at + outage, end(run))]
    last_events, last_at = 0, time.monotonic()
    rate = 0.0
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while (elapsed := time.monotonic() - started) < duration:
            while schedule and schedule[0][0] <= elapsed:
                schedule.pop(0)[1]()
            now = time.monotonic()
            if now - last_at >= 1.0:
                rate = (load.events - last_events) / (now - last_at)
                last_events, last_at = load.events, now
            left = duration - elapsed
            live.update(_view(chat, load, f"{status['text']}   ({left:4.0f}s left)", rate))
            await asyncio.sleep(0.25)
    load.stop.set()
    await asyncio.wait(tasks, timeout=6)
    for task in tasks:
        task.cancel()
    for run in runs:
        for stamp, name, state in transitions:
            if name != run.dependency:
                continue
            opening = state == "open" and run.opened_after is None
            if opening and run.injected_at is not None and stamp >= run.injected_at:
                run.opened_after = stamp - run.injected_at
            closing = state == "closed" and run.closed_after is None
            if closing and run.recovered_at is not None and stamp >= run.recovered_at:
                run.closed_after = (
                    stamp - run.recovered_at if run.opened_after is not None else None
                )


def _clock(started: float) -> str:
    return f"t+{time.monotonic() - started:.1f}s"


def _pick_port(port: int) -> int:
    if port:
        return port
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", 8765))
        except OSError:
            return free_port()
    return 8765


def run_demo(
    console: Console | None = None,
    *,
    duration: float = 75.0,
    users: int = 12,
    scenarios: list[str] | None = None,
    port: int = 0,
) -> int:
    """Run the demo; 0 when every target was met, 1 when one was not, 2 on bad usage."""
    from . import missing_requirements

    if console is None:
        console = Console(highlight=False)
    missing = missing_requirements()
    if missing:
        console.print(
            "[bold red]otel-resilience demo needs the 'demo' extra[/]: "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed.\n"
            "Install it with:  pip install 'otel-resilience[demo]'   "
            "(from a checkout: pip install -e '.[demo]')\n"
            "Without it, 'otel-resilience walkthrough' shows a breaker on a simulated outage."
        )
        return 2
    keys = scenarios or list(SCENARIOS)
    unknown = [key for key in keys if key not in SCENARIOS]
    if unknown:
        console.print(
            f"[red]unknown scenario {', '.join(unknown)}[/]; choose from {', '.join(SCENARIOS)}"
        )
        return 2
    from ._app import DEFAULT_CONFIG, create_app

    infra = _Infrastructure(console)
    server: _Server | None = None
    transitions: list[tuple[float, str, str]] = []
    runs: list[_ScenarioRun] = []
    load: _Load | None = None
    chat: Any = None
    interrupted = False
    try:
        infra.start()
        for note in infra.notes:
            console.print(f"[yellow]note[/]: {note}")
        for key in keys:
            if infra.available(key):
                runs.append(_ScenarioRun(key, *SCENARIOS[key]))
            else:
                console.print(f"[yellow]skipped[/]: {key} (its server is not available)")
        app = create_app(
            DEFAULT_CONFIG,
            redis_url=infra.redis_url,
            postgres_dsn=infra.postgres_dsn,
            analytics_url=infra.analytics.url,
            schema="otel_resilience_demo",
            otlp_endpoint=infra.collector.endpoint if infra.collector_up else None,
            probe_interval_seconds=0.5,
        )
        chat = app.state.chat
        infra.chat = chat
        chat.registry.add_transition_listener(
            lambda breaker, old, new: transitions.append(
                (time.monotonic(), breaker.name, new.value)
            )
        )
        server = _Server(app, _pick_port(port))
        server.start()
        base = f"http://127.0.0.1:{server.port}"
        console.print(
            f"[bold]chat service[/] on {base}: live page [link]{base}/resilience[/], "
            f"{base}/health, {base}/metrics; {users} users; "
            f"{len(runs)} outages over {duration:g}s; Ctrl-C stops"
        )
        load = _Load(base, users)
        asyncio.run(_drive(infra, chat, load, runs, duration, console, transitions))
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]stopped (Ctrl-C); cleaning up[/]")
    finally:
        if server is not None:
            call_quietly(server.stop)
        if chat is not None:  # stop exporting before the collector goes away
            call_quietly(chat.telemetry.meter_provider.shutdown)
        infra.stop()
    if load is None:
        return 130 if interrupted else 1
    misses = _summary(runs, load, console)
    if misses:
        console.print(f"[bold red]{len(misses)} target{'s' if len(misses) > 1 else ''} missed:[/]")
        for miss in misses:
            console.print(Text(f"  {miss}", style="red"))
    else:
        console.print("[bold green]every target met[/]")
    if interrupted:
        return 130
    return 1 if misses else 0
