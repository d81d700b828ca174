"""The sensor bus benchmark: the gateway's real poller against the simulated RS-485 line.

What it measures is the poll cycle (every node read once, back to back) over a pty, with the
simulator charging each byte its wire time at the baud rate, ending each request after 3.5
characters of silence and answering after the node's turnaround. The physical limit is the
same sum with no software in it (:func:`gateway.drivers.modbus.bus_limit_s`); the ratio of
the two is the poller's own overhead.

It runs on an event loop over ``select()`` rather than epoll: epoll waits in whole
milliseconds, which would add up to a millisecond to each 3.5-character gap (2 ms at 19200
baud) and measure the selector, not the poller. Both ends share the loop, as in the
whole-lot simulator.

``link="socket"`` runs the same over a socket pair: a pty hands each write to the reader
through a kernel worker thread, which on a busy machine adds its own scheduling delay to
every frame; the difference between the two figures is that delay, not the poller's.
"""

from __future__ import annotations

import asyncio
import importlib
import selectors
import statistics
from typing import Any, Literal

from gateway.config import BusConfig
from gateway.core.clock import SystemClock
from gateway.drivers.modbus import LineTiming, ModbusBus, RtuLink, bus_limit_s

DEFAULT_TURNAROUND_S = 0.0005  # an RP2040 node from the end of a request to its first bit

Link = Literal["pty", "socket"]


class SimulatorMissing(RuntimeError):
    """The hardware simulator (the `sim` extra, package parking_sim) is not installed."""


def _simulator() -> Any:
    try:
        return importlib.import_module("parking_sim.bus")
    except ImportError as exc:
        raise SimulatorMissing(
            "the bus benchmark needs the hardware simulator: install the 'sim' extra") from exc


async def _measure(nodes: int, baudrate: int, parity: str, cycles: int,
                   turnaround_s: float, link: Link) -> dict[str, Any]:
    sim_bus = _simulator()
    units = range(1, nodes + 1)
    sim = sim_bus.SensorBus(units=units, seed=0, baudrate=baudrate, parity=parity,
                            turnaround_s=turnaround_s, transport=link)
    port = await sim.start()
    config = BusConfig(port=port or "socketpair", baudrate=baudrate, parity=parity,
                       timeout_ms=200, retries=0, poll_interval_s=0)
    line = RtuLink(config, opener=sim.opener) if link == "socket" else RtuLink(config)
    bus = ModbusBus(config, {u: f"bay-{u}" for u in units}, SystemClock(), lambda _r: None,
                    link=line)
    try:
        bus.link.open()
        await bus.poll_once()  # warm-up: first readings, caches
        times = [await bus.poll_once() for _ in range(cycles)]
    finally:
        bus.link.close()
        await sim.close()
    counters = bus.health().counters
    failed = counters["timeouts"] + counters["crc_errors"] + counters["exceptions"]
    limit = bus_limit_s(LineTiming.of(baudrate, parity), nodes, turnaround_s=turnaround_s)
    cycle = statistics.median(times)
    return {
        "cycle_ms": round(cycle * 1000, 3),
        "bus_limit_ms": round(limit * 1000, 3),
        "ratio": round(cycle / limit, 4),
        "nodes": nodes,
        "link": link,
        "baud": baudrate,
        "parity": parity,
        "cycles": cycles,
        "cycle_ms_min": round(min(times) * 1000, 3),
        "cycle_ms_max": round(max(times) * 1000, 3),
        "turnaround_ms": turnaround_s * 1000,
        "failed_transactions": failed,
    }


def bus_bench(*, nodes: int = 32, baudrate: int = 19200, parity: str = "E", cycles: int = 10,
              turnaround_s: float = DEFAULT_TURNAROUND_S, link: Link = "pty") -> dict[str, Any]:
    """Median poll cycle over ``cycles`` cycles, the bus's physical limit, and their ratio."""
    if not 1 <= nodes <= 247:
        raise ValueError("nodes must be 1 to 247 (Modbus unit ids)")
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        return loop.run_until_complete(
            _measure(nodes, baudrate, parity, cycles, turnaround_s, link))
    finally:
        loop.close()
