"""A simulated RS-485 bus of detector nodes on a pty pair, with a hostile link on demand.

The gateway opens :attr:`SensorBus.port` (the pty's slave side) as its serial port, exactly as
it opens ``/dev/ttyUSB0`` on a lot; the simulator sits on the master side and plays the wire
and every node on it:

- bytes take their wire time (11 bits a character at the configured baud rate), a request
  frame ends after 3.5 characters of silence, a node answers after its turnaround time, and
  its reply reaches the gateway when its last byte would have;
- each node is a :class:`~parking_sim.nodes.SimNode` running the firmware's own detection and
  Modbus slave code;
- :class:`LinkFaults` injects dropped and corrupted frames in either direction, dropped bytes,
  noise bytes, delays, byte-at-a-time delivery and silent nodes; :class:`LinkStats` counts
  exactly what was injected, for tests to compare with what the gateway counted.

All timing is through the running asyncio loop (``loop.time()``, ``call_at``, ``add_reader``).
Under a virtual-time loop use ``transport="socket"``: a pty hands bytes over through a kernel
work queue, late by a scheduling delay that virtual time would count as silence (and the
gateway as a timeout); a socket pair delivers them at once. The gateway then takes the line
from :meth:`SensorBus.opener` instead of opening a path. For a whole-lot simulation::

    bus = SensorBus(units=[1, 2, 3], seed=7)   # or transport="socket"
    await bus.start()          # BusConfig(port=bus.port), or RtuLink(config, opener=bus.opener)
    bus.park(2)                # a car drives into the bay of unit 2
    bus.truth(2)               # "occupied"
    bus.leave(2)
    world.bays.subscribe(bus.follow({"A-03": 1, ...}))       # or let the world park the cars
    await bus.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import tty
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from parking_sim.nodes import Car, SimNode, random_car

Truth = Literal["free", "occupied"]


@dataclass
class LinkFaults:
    """What goes wrong on the wire. Rates are probabilities per frame; change them at any time."""

    drop_request: float = 0.0  # the request never reaches the node
    drop_response: float = 0.0  # the reply never reaches the gateway
    corrupt_request: float = 0.0  # one byte of the request is damaged
    corrupt_response: float = 0.0  # one byte of the reply is damaged
    drop_byte: float = 0.0  # one byte of the reply is lost
    noise: float = 0.0  # 1 to 3 noise bytes precede the reply (a transceiver glitch)
    delay_s: float = 0.0  # extra latency before every reply
    byte_at_a_time: bool = False  # reply bytes reach the gateway one write at a time
    silent: set[int] = field(default_factory=set)  # unit ids that do not answer at all

    @classmethod
    def hostile(cls, *, drop: float = 0.2, corrupt: float = 0.05) -> LinkFaults:
        """Frames dropped and corrupted at these rates, split evenly between the directions."""
        return cls(drop_request=drop / 2, drop_response=drop / 2,
                   corrupt_request=corrupt / 2, corrupt_response=corrupt / 2,
                   byte_at_a_time=True)


@dataclass
class LinkStats:
    """What the simulated wire did: the ground truth for counting tests."""

    requests: int = 0
    requests_dropped: int = 0
    requests_corrupted: int = 0
    requests_unanswered: int = 0  # reached a node (or nobody) and got no reply
    responses: int = 0  # replies put on the wire
    responses_dropped: int = 0
    responses_corrupted: int = 0
    bytes_dropped: int = 0
    noise_bytes: int = 0
    silent_ignored: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def char_time_s(baudrate: int, parity: str = "E", stopbits: int = 1) -> float:
    """Seconds per character: start bit, 8 data bits, parity bit if any, stop bits."""
    return (1 + 8 + (parity != "N") + stopbits) / baudrate


def silence_s(baudrate: int, char_s: float) -> float:
    """The 3.5-character frame gap; a fixed 1.75 ms above 19200 baud (as the spec says)."""
    return 0.00175 if baudrate > 19200 else 3.5 * char_s


class SensorBus:
    """Detector nodes on one simulated RS-485 line (a pty pair).

    ``units``: the nodes' unit ids, in the order their bays stand in the row (a car straddling
    two bays disturbs both neighbours). ``ultrasonic``: units with an ultrasonic sensor too.
    ``calibrated``: nodes start commissioned (a baseline learnt); else each calibrates on its
    first 3.2 s of samples. ``turnaround_s``: a node's time from the end of a request to the
    start of its reply.
    """

    def __init__(
        self,
        units: Iterable[int] = range(1, 9),
        *,
        seed: int = 0,
        baudrate: int = 19200,
        parity: str = "E",
        stopbits: int = 1,
        turnaround_s: float = 0.0005,
        faults: LinkFaults | None = None,
        ultrasonic: Collection[int] = (),
        calibrated: bool = True,
        node_settings: dict[str, Any] | None = None,
        transport: Literal["pty", "socket"] = "pty",
    ) -> None:
        self.transport = transport
        self.baudrate = baudrate
        self.char_s = char_time_s(baudrate, parity, stopbits)
        self.t35_s = silence_s(baudrate, self.char_s)
        self.turnaround_s = turnaround_s
        self.faults = faults or LinkFaults()
        self.stats = LinkStats()
        self._rng = random.Random(seed)
        self._link_rng = random.Random(seed + 1)  # fault draws do not disturb the physics
        self._nodes: dict[int, SimNode] = {}
        self._order: list[int] = []
        for index, unit in enumerate(units):
            if not 1 <= unit <= 247 or unit in self._nodes:
                raise ValueError(f"unit id {unit} is out of range 1-247 or used twice")
            node_rng = random.Random(f"{seed}:{unit}")
            self._nodes[unit] = SimNode(unit, index, node_rng, baudrate=baudrate,
                                        ultrasonic=unit in ultrasonic, calibrated=calibrated,
                                        settings=node_settings)
            self._order.append(unit)
        self._cars: dict[int, Car] = {}
        self._next_car = 1
        self._fd: int | None = None
        self._peer_fd: int | None = None
        self._sockets: tuple[socket.socket, socket.socket] | None = None
        self.port = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._rx = bytearray()
        self._line_busy_until = 0.0
        self._frame_end: asyncio.TimerHandle | None = None
        self._frame_end_at = 0.0
        self._pending: list[asyncio.TimerHandle] = []
        # Bytes through the pty, to tell a virtual-time loop when bytes are still in transit.
        self.bytes_received = 0
        self.bytes_sent = 0

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, *, running_for_s: float = 0.0) -> str:
        """Open the line and start serving; returns the pty path ("" for a socket pair).

        `running_for_s`: the nodes have been running this long already (the gateway restarts,
        the nodes do not): a car parked over one before the start is detected by the first
        poll, as it has been all along.
        """
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time() - running_for_s
        if self.transport == "socket":
            ours, theirs = socket.socketpair()
            for s in (ours, theirs):
                s.setblocking(False)
            self._sockets = (ours, theirs)
            self._fd = ours.fileno()
        else:
            master, peer = os.openpty()
            tty.setraw(peer)  # no echo, no CR/LF translation: a clean 8-bit line
            os.set_blocking(master, False)
            self._fd, self._peer_fd = master, peer
            self.port = os.ttyname(peer)
        self._loop.add_reader(self._fd, self._on_readable)
        return self.port

    def opener(self, _config: object = None) -> _GatewayEnd:
        """The gateway's end of a socket-pair line (``RtuLink(config, opener=bus.opener)``)."""
        if self._sockets is None:
            raise RuntimeError("opener() serves transport='socket' after start(); open .port")
        return _GatewayEnd(self._sockets[1])

    async def close(self) -> None:
        if self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)
        for handle in self._pending:
            handle.cancel()
        if self._frame_end is not None:
            self._frame_end.cancel()
        if self._sockets is not None:
            for s in self._sockets:
                s.close()
            self._sockets = None
        else:
            for fd in (self._fd, self._peer_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        self._fd = self._peer_fd = None

    async def __aenter__(self) -> SensorBus:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # --- the lot's side: cars and truth --------------------------------------------------

    @property
    def units(self) -> list[int]:
        return list(self._order)

    def node(self, unit: int) -> SimNode:
        return self._nodes[unit]

    def park(self, unit: int, *, offset: float = 0.0) -> int:
        """A car parks over ``unit``'s bay (``offset`` in bay widths toward the next bay).

        Returns the car's id for :meth:`leave_car`. ``offset=0.5`` straddles two bays.
        """
        self._advance_all()
        position = self._order.index(unit) + offset
        car_id = self._next_car
        self._next_car += 1
        self._cars[car_id] = car = random_car(self._rng, position)
        for node in self._nodes.values():
            node.physics.cars.append(car)
        return car_id

    def leave(self, unit: int) -> None:
        """The car(s) standing over ``unit``'s bay drive away."""
        index = self._order.index(unit)
        for car_id, car in list(self._cars.items()):
            if abs(car.position - index) <= 0.5:
                self.leave_car(car_id)

    def leave_car(self, car_id: int) -> None:
        self._advance_all()
        car = self._cars.pop(car_id)
        for node in self._nodes.values():
            node.physics.cars.remove(car)

    def follow(self, units_by_bay: Mapping[str, int]) -> Callable[[str, bool, str | None], None]:
        """A listener for the whole-lot simulator's bay changes: ``(bay_id, occupied, plate)``.

        ``world.bays.subscribe(bus.follow(world.modbus_units))`` parks and unparks cars over
        the nodes as the simulated traffic does; bays without a node are ignored.
        """

        def changed(bay_id: str, occupied: bool, _plate: str | None) -> None:
            unit = units_by_bay.get(bay_id)
            if unit is None or unit not in self._nodes:
                return
            if occupied:
                self.park(unit)
            else:
                self.leave(unit)

        return changed

    def truth(self, unit: int) -> Truth:
        """Whether a car really stands in the bay (any part of its centre line within it)."""
        index = self._order.index(unit)
        taken = any(abs(car.position - index) <= 0.5 for car in self._cars.values())
        return "occupied" if taken else "free"

    def detected(self, unit: int) -> Truth:
        """What the node's own detector believes now (before the bus carries it)."""
        node = self._nodes[unit]
        node.advance(self._now())
        return "occupied" if node.detector.occupied else "free"

    def _now(self) -> float:
        return (self._loop.time() if self._loop is not None else self._t0) - self._t0

    def _advance_all(self) -> None:
        if self._loop is None:
            return
        now = self._now()
        for node in self._nodes.values():
            node.advance(now)

    # --- the wire ------------------------------------------------------------------------

    def _on_readable(self) -> None:
        assert self._loop is not None
        assert self._fd is not None
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the gateway closed the port (EIO on a pty): wait for it to reopen
            return
        if not data:  # the gateway closed its end of a socket pair: nobody is left to serve
            self._loop.remove_reader(self._fd)
            return
        self.bytes_received += len(data)
        now = self._loop.time()
        # The bytes occupy the wire from when they were written, one character time each.
        self._line_busy_until = max(self._line_busy_until, now) + len(data) * self.char_s
        self._rx.extend(data)
        if self._frame_end is not None:
            self._frame_end.cancel()
        self._frame_end_at = self._line_busy_until + self.t35_s
        self._frame_end = self._loop.call_at(self._frame_end_at, self._end_of_frame)

    def _end_of_frame(self) -> None:
        """3.5 characters of silence: whatever arrived is one frame; deliver it."""
        self._frame_end = None
        frame = bytes(self._rx)
        self._rx.clear()
        self.stats.requests += 1
        rng, faults = self._link_rng, self.faults
        if rng.random() < faults.drop_request:
            self.stats.requests_dropped += 1
            return
        damaged = rng.random() < faults.corrupt_request
        if damaged:
            self.stats.requests_corrupted += 1
            frame = _corrupt(frame, rng)
        reply = self._dispatch(frame, damaged)
        if reply is None:
            self.stats.requests_unanswered += 1
            return
        self._transmit(reply, frame[0])

    def _dispatch(self, frame: bytes, damaged: bool = False) -> bytes | None:
        if not frame:
            return None
        now = self._now()
        if frame[0] == 0:  # broadcast: every node acts, none answers
            for each in list(self._nodes.values()):
                each.advance(now)
                each.handle_frame(frame)
                self._rekey(each)
            return None
        node = self._nodes.get(frame[0])
        if node is None:
            return None
        if node.unit_id in self.faults.silent:
            if not damaged:  # each lost request counts once, under the first fault that hit it
                self.stats.silent_ignored += 1
            return None
        node.advance(now)
        reply = node.handle_frame(frame)
        self._rekey(node)
        return reply

    def _rekey(self, node: SimNode) -> None:
        """After the reply, the node saves its settings and may answer at a new address."""
        if not node.registers.dirty:
            return
        old = next(u for u, n in self._nodes.items() if n is node)
        node.apply_settings()
        if node.unit_id != old:
            del self._nodes[old]
            self._nodes[node.unit_id] = node
            self._order[self._order.index(old)] = node.unit_id

    def _transmit(self, reply: bytes, unit: int) -> None:
        assert self._loop is not None
        rng, faults, stats = self._link_rng, self.faults, self.stats
        stats.responses += 1
        if rng.random() < faults.drop_response:
            stats.responses_dropped += 1
            return
        if rng.random() < faults.corrupt_response:
            stats.responses_corrupted += 1
            reply = _corrupt(reply, rng)
        if len(reply) > 1 and rng.random() < faults.drop_byte:
            stats.bytes_dropped += 1
            cut = rng.randrange(len(reply))
            reply = reply[:cut] + reply[cut + 1:]
        if rng.random() < faults.noise:
            # Never the unit's own address: that would look like the start of its reply.
            noise = bytes(rng.choice([b for b in range(256) if b != unit])
                          for _ in range(rng.randint(1, 3)))
            stats.noise_bytes += len(noise)
            reply = noise + reply
        # From when the frame ended on the wire, not from when this code ran: the simulator's
        # own latency is not the node's.
        start = self._frame_end_at + self.turnaround_s + faults.delay_s
        self._line_busy_until = start + len(reply) * self.char_s
        if faults.byte_at_a_time:
            for i in range(len(reply)):
                self._send_at(start + (i + 1) * self.char_s, reply[i:i + 1])
        else:
            self._send_at(self._line_busy_until, reply)

    def _send_at(self, when: float, data: bytes) -> None:
        assert self._loop is not None
        handle: asyncio.TimerHandle

        def send() -> None:
            self._pending.remove(handle)
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    self.bytes_sent += os.write(self._fd, data)

        handle = self._loop.call_at(when, send)
        self._pending.append(handle)


class _GatewayEnd:
    """What the gateway's RtuLink needs of a port: a file descriptor, and close()."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()


def _corrupt(frame: bytes, rng: random.Random) -> bytes:
    """One byte damaged (XOR with a non-zero pattern): a burst the CRC always catches."""
    if not frame:
        return frame
    i = rng.randrange(len(frame))
    damaged = bytearray(frame)
    damaged[i] ^= rng.randrange(1, 256)
    return bytes(damaged)
