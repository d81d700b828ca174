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

The simulated line is given by the caller (the simulator's `bench bus` plugin passes its
``SensorBus``): the gateway never imports the simulator.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any, Literal, Protocol

from gateway.config import BusConfig
from gateway.core.clock import SystemClock
from gateway.core.stats import percentile
from gateway.drivers.modbus import LineTiming, ModbusBus, RtuLink, bus_limit_s

DEFAULT_TURNAROUND_S = 0.0005  # an RP2040 node from the end of a request to its first bit

Link = Literal["pty", "socket"]


class SimulatedBus(Protocol):
    """Detector nodes on a simulated line, as the simulator's ``SensorBus`` runs them."""

    async def start(self) -> str:
        """Open the line; the pty's path ("" for a socket pair)."""

    def opener(self, config: BusConfig, /) -> Any:
        """The gateway's end of a socket-pair line, for ``RtuLink(opener=...)``."""

    async def close(self) -> None: ...


class SimulatedBusFactory(Protocol):
    """Builds the nodes with these unit ids on one line of that speed and transport."""

    def __call__(self, units: range, /, *, seed: int, baudrate: int, parity: str,
                 turnaround_s: float, transport: Link) -> SimulatedBus: ...


async def _measure(simulator: SimulatedBusFactory, nodes: int, baudrate: int, parity: str,
                   cycles: int, turnaround_s: float, link: Link) -> dict[str, Any]:
    units = range(1, nodes + 1)
    sim = simulator(units, seed=0, baudrate=baudrate, parity=parity, turnaround_s=turnaround_s,
                    transport=link)
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
    cycle = percentile(times, 0.50) or 0.0  # the median cycle, as the README reports it
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


def bus_bench(simulator: SimulatedBusFactory, *, nodes: int = 32, baudrate: int = 19200,
              parity: str = "E", cycles: int = 10, turnaround_s: float = DEFAULT_TURNAROUND_S,
              link: Link = "pty") -> dict[str, Any]:
    """Median poll cycle over ``cycles`` cycles, the bus's physical limit, and their ratio.

    ``simulator`` builds the simulated nodes on their line (the simulator's ``SensorBus``).
    """
    if not 1 <= nodes <= 247:
        raise ValueError("nodes must be 1 to 247 (Modbus unit ids)")
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        return loop.run_until_complete(
            _measure(simulator, nodes, baudrate, parity, cycles, turnaround_s, link))
    finally:
        loop.close()
