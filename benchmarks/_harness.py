"""What every benchmark here shares: pinning, interleaved rounds, paired ratios, tables.

A shared 2-core machine moves a loopback benchmark by +-20% between processes (client
and server sharing a core or not, a neighbour's burst), so the figures are taken the way
that survives it:

- **Pinning.** With two or more CPUs, the client (this process, its workers) runs on one
  CPU and the server it talks to (an own redis-server) on another, with ``taskset``; all
  threads of the server are pinned, so its background threads do not land on the client's.
- **CPU time where the work is computation.** ``time.thread_time_ns`` (or the process's
  CPU time for threaded work) does not count the time a neighbour held the core.
- **In-process A/B.** One process, every set-up installed and toggled round by round
  (``ab``), rounds interleaved and their order alternated (ABC, CBA, ...): a layer's cost
  is the difference within one process, without cross-process noise.
- **Alternated processes.** Where set-ups cannot share a process (end to end through
  ``configure()``), each set-up runs in its own pinned process and the processes take
  turns block by block (``processes``), again in alternating order, so the blocks of one
  round run back to back.
- **Paired ratios.** Each round's figure is divided by the baseline's figure of the same
  round; slow drifts of the machine cancel, and the report gives the best and the median
  of those ratios next to the best absolute figures.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Samples",
    "Summary",
    "ab",
    "client_cpu",
    "machine_line",
    "orders",
    "own_redis",
    "pin_client",
    "processes",
    "serve_blocks",
    "server_cpu",
    "table",
    "taskset",
]

Clock = Callable[[], int]
"""A nanosecond clock: ``time.thread_time_ns``, ``process_time_ns``, ``perf_counter_ns``."""

_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
_TASKSET = shutil.which("taskset")


def can_pin() -> bool:
    """Whether client and server can get a CPU each (two or more CPUs, and taskset)."""
    return len(_CPUS) >= 2 and _TASKSET is not None


def client_cpu() -> int | None:
    """The CPU the measuring process runs on, when pinning is possible."""
    return _CPUS[0] if can_pin() else None


def server_cpu() -> int | None:
    """The CPU the server runs on, when pinning is possible."""
    return _CPUS[1] if can_pin() else None


def taskset(cpu: int | None) -> list[str]:
    """The command prefix that runs a command on ``cpu`` (empty when not pinning)."""
    if cpu is None or _TASKSET is None:
        return []
    return [_TASKSET, "-c", str(cpu)]


def pin_client() -> None:
    """Pin this process (every thread it starts later) to the client CPU."""
    cpu = client_cpu()
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _pin_all_threads(pid: int, cpu: int) -> None:
    if _TASKSET is not None:
        subprocess.run(
            [_TASKSET, "-a", "-p", "-c", str(cpu), str(pid)],
            check=True,
            stdout=subprocess.DEVNULL,
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def own_redis() -> Iterator[int]:
    """An own redis-server on a free port, pinned to the server CPU; yields the port.

    The benchmarks never touch the shared Redis: their GETs, their load and their
    pinning stay on this instance.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is needed for this benchmark")
    port = _free_port()
    server = subprocess.Popen(
        [
            *taskset(server_cpu()),
            *(binary, "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {port}") from None
                time.sleep(0.02)
        cpu = server_cpu()
        if cpu is not None:
            _pin_all_threads(server.pid, cpu)  # its background threads too
        yield port
    finally:
        server.kill()
        server.wait(10)


# -- samples and summaries -------------------------------------------------------------


@dataclass
class Samples:
    """Per-item figures (µs) of several set-ups, one list entry per round, rounds aligned."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def best(self, name: str) -> float:
        return min(self.values[name])

    def median(self, name: str) -> float:
        return statistics.median(self.values[name])

    def paired(self, name: str, baseline: str) -> list[float]:
        """``name / baseline`` round by round."""
        return [
            value / base
            for value, base in zip(self.values[name], self.values[baseline], strict=True)
        ]

    def difference(self, name: str, baseline: str) -> list[float]:
        """``name - baseline`` round by round (a layer's own cost)."""
        return [
            value - base
            for value, base in zip(self.values[name], self.values[baseline], strict=True)
        ]

    def summary(self, name: str, baseline: str | None = None) -> Summary:
        ratios = self.paired(name, baseline) if baseline and name != baseline else []
        differences = self.difference(name, baseline) if baseline and name != baseline else []
        return Summary(
            name=name,
            best=self.best(name),
            median=self.median(name),
            ratio_of_bests=self.best(name) / self.best(baseline) if baseline else None,
            best_ratio=min(ratios) if ratios else None,
            median_ratio=statistics.median(ratios) if ratios else None,
            median_difference=statistics.median(differences) if differences else None,
        )


@dataclass(frozen=True)
class Summary:
    """One set-up against the baseline: best and median figures, ratios, the difference."""

    name: str
    best: float
    median: float
    ratio_of_bests: float | None
    best_ratio: float | None
    median_ratio: float | None
    median_difference: float | None


def orders(names: Sequence[str], rounds: int) -> Iterator[Sequence[str]]:
    """Round orders that put every set-up at every position equally often and never run
    one twice in a row: the rotations (ABC, BCA, CAB, ABC...).

    Forward and backward in turn (ABC, CBA) ran the first and the last set-up twice in a
    row at every turn, the second block with the caches still holding its own memory: on
    loopback the set-ups at the ends measured 1 to 3% faster than those in the middle,
    the baseline among them. With two set-ups no order avoids both, and they alternate.
    """
    count = len(names)
    for index in range(rounds):
        if count <= 2:
            yield names if index % 2 == 0 else list(reversed(names))
        else:
            shift = index % count
            yield [*names[shift:], *names[:shift]]


def ab(
    work: Callable[[], int],
    variants: Mapping[str, Callable[[], contextlib.AbstractContextManager[Any]]],
    *,
    rounds: int,
    clock: Clock = time.thread_time_ns,
) -> Samples:
    """Toggle set-ups in this process and time ``work`` (which returns its item count).

    ``variants`` maps a name to a context-manager factory that switches the set-up on for
    one block (install, enable...) and off again after it.
    """
    samples = Samples()
    names = list(variants)
    for order in orders(names, rounds):
        for name in order:
            with variants[name]():
                start = clock()
                count = work()
                samples.add(name, (clock() - start) / count / 1000)
    return samples


def serve_blocks(run_block: Callable[[], Mapping[str, float]]) -> None:
    """The worker side of ``processes``: run one block per request, print its figures.

    Reads one line per block from stdin (EOF ends the worker) and answers with one JSON
    line of figures (µs per item). Between blocks the worker waits in a blocking read,
    using no CPU, so the set-ups take turns on the pinned CPU.
    """
    print("ready", flush=True)
    for _ in sys.stdin:
        print(json.dumps(dict(run_block())), flush=True)


def processes(
    command: Callable[[str], list[str]],
    setups: Sequence[str],
    *,
    rounds: int,
    replicas: int = 1,
) -> dict[str, Samples]:
    """Run each set-up in its own pinned processes; they take turns, block by block.

    ``command(setup)`` is the worker's command line; the worker calls ``serve_blocks``.
    Every round asks one worker of each set-up for one block, in alternating order, so the
    blocks of a round run back to back and pair well even while the machine's load
    changes. With ``replicas``, each set-up runs in that many processes and round ``i``
    asks replica ``i % replicas`` of every set-up: a process's own luck (where its memory
    lies, its hash seed) is averaged over several, as pyperf does with its worker
    processes, instead of deciding a set-up's figure.
    Returns one ``Samples`` per figure name.
    """
    prefix = taskset(client_cpu())
    workers = {
        (setup, replica): subprocess.Popen(
            [*prefix, *command(setup)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for setup in setups
        for replica in range(replicas)
    }
    collected: dict[str, Samples] = {}
    try:
        for worker in workers.values():
            assert worker.stdout is not None
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError("a benchmark worker did not start")
        for index, order in enumerate(orders(setups, rounds)):
            for setup in order:
                worker = workers[setup, index % replicas]
                assert worker.stdin is not None
                assert worker.stdout is not None
                worker.stdin.write("block\n")
                worker.stdin.flush()
                figures = json.loads(worker.stdout.readline())
                for figure, value in figures.items():
                    collected.setdefault(figure, Samples()).add(setup, float(value))
    finally:
        for worker in workers.values():
            if worker.stdin is not None:
                worker.stdin.close()
        for worker in workers.values():
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    return collected


# -- output ----------------------------------------------------------------------------


def machine_line() -> str:
    """When, where and under what load the figures were taken."""
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    pinned = (
        f"client on CPU {client_cpu()}, server on CPU {server_cpu()} (taskset)"
        if can_pin()
        else "not pinned (fewer than 2 CPUs or no taskset)"
    )
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Measured {now} on {platform.python_implementation()} {platform.python_version()}, "
        f"{len(_CPUS) or os.cpu_count()} CPUs, {pinned}; load average {load}."
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; the first column left-aligned, the others right-aligned."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|---|" + "---:|" * (len(headers) - 1),
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(value) for value in row) + " |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)
