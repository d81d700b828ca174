"""`parking-gateway bench signs`: how soon a bay change reaches the free-space signs.

The daemon is the real one on the demo lot (its entrance sign counting the lot, its level
sign floor 1, ASCII signs on one RS-485 line), in this process, with the sign line on a pty
whose other end this bench plays: it decodes every frame with the driver's codec, stamps its
arrival and answers ACK at once, as a sign does. The detector bus and the ultrasonic sensor are
left out, so the bench's readings are the only ones the bays get; each is handed to the daemon
as a driver hands it over (`occupancy.on_reading`), a floor-1 bay going free and occupied in
turn, `GAP_S` apart (more than the availability feed's 100 ms coalescing window, so each change
measures its own way). A change's latency runs from the reading to the arrival of the first
frame that shows the new count: its journal commit (with fsync), the availability rebuilt, the
board's update, the frame written. On a real line add the frame's wire time (14 bytes: 15 ms
at 9600 baud) and the sign's turnaround.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import tty
from pathlib import Path
from typing import Any

from gateway.bench.footprint import DEMO_LOT, IdleCamera
from gateway.core.events import BayState
from gateway.core.stats import percentile
from gateway.drivers.signs import AsciiFrame, FrameDecoder, encode_reply

GAP_S = 0.25  # between two changes
START_S = 60.0  # the most the daemon may take to start and light its signs
LAND_S = 1.0  # after the last change, for its frames
ENTRANCE, LEVEL = 1, 2  # the demo lot's sign addresses: the lot's count, floor 1's


class BenchSign:
    """The far end of the signs' line: every frame stamped (monotonic time) and ACKed."""

    def __init__(self) -> None:
        master, peer = os.openpty()
        tty.setraw(peer)
        os.set_blocking(master, False)
        self.fd, self.peer = master, peer
        self.port = os.ttyname(peer)
        self.frames: list[tuple[float, int, str]] = []
        self._decoder = FrameDecoder()
        asyncio.get_running_loop().add_reader(master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # the daemon closed its end
            return
        now = time.monotonic()
        for frame in self._decoder.feed(data):
            if isinstance(frame, AsciiFrame):
                self.frames.append((now, frame.address, frame.text))
                with contextlib.suppress(OSError):
                    os.write(self.fd, encode_reply(frame.address, ok=True))

    def showing(self, address: int) -> str | None:
        return next((text for _, a, text in reversed(self.frames) if a == address), None)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        for fd in (self.fd, self.peer):
            with contextlib.suppress(OSError):
                os.close(fd)


def signs_bench(*, changes: int = 100) -> dict[str, Any]:
    """Run the bench (about `changes` x GAP_S and the start); its figures."""
    if not DEMO_LOT.exists():
        raise RuntimeError(f"no demo lot at {DEMO_LOT}: run the bench in a checkout")
    with tempfile.TemporaryDirectory(prefix="parking-gateway-bench-signs-") as work:
        return asyncio.run(_bench(Path(work), changes))


async def _bench(work: Path, changes: int) -> dict[str, Any]:
    from gateway.app import Gateway, HardwareOverrides
    from gateway.config import NoSensor, load_settings
    from gateway.drivers import BayReading
    from gateway.runtime.log import configure_logging
    from gateway.runtime.notify import Notifier

    configure_logging("error", "console", sys.stderr)  # the figures are the output
    lot = load_settings(DEMO_LOT, env={
        "PARKING_GATEWAY__JOURNAL__PATH": str(work / "journal.db"),
        "PARKING_GATEWAY__CONTROL__SOCKET_PATH": str(work / "control.sock"),
    })
    # No bus and no ultrasonic sensor (its mock pins soon read "no echo"): the bench's
    # readings are the only changes the lot sees.
    settings = lot.model_copy(update={"bus": None, "bays": tuple(
        b.model_copy(update={"sensor": NoSensor(kind="none")})
        if b.sensor.kind == "ultrasonic" else b for b in lot.bays)})
    by_address = {s.station: s for s in settings.signs if s.kind == "ascii"}
    if set(by_address) != {ENTRANCE, LEVEL} or by_address[LEVEL].shows != "floor:1":
        raise RuntimeError(f"{DEMO_LOT} no longer has the entrance and floor-1 signs")
    bay = next(b.id for b in settings.bays if b.sensor.kind == "modbus" and b.floor == "1")
    sign = BenchSign()
    gateway = Gateway(settings, sync=False, notifier=Notifier(None), hardware=HardwareOverrides(
        cameras={lane.id: IdleCamera(lane.id) for lane in settings.lanes},
        sign_ports={s.id: sign.port for s in settings.signs}))
    daemon = asyncio.create_task(gateway.run())
    try:
        async with asyncio.timeout(START_S):
            await gateway.started.wait()
            while sign.showing(ENTRANCE) is None or sign.showing(LEVEL) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            # A first reading, not timed: the bay taken (no free count changes), its journal
            # commit the first of the run (a first write costs more than the rest).
            gateway.occupancy.on_reading(BayReading(bay, "occupied", "modbus:bench",
                                                    gateway.clock.stamp()))
            await _settled(gateway)
        base = gateway.availability.current
        assert base is not None
        assert gateway.occupancy.bays[bay].state == "occupied"
        made: list[tuple[float, str, str]] = []  # when, and what each sign must then show
        for i in range(changes):
            await asyncio.sleep(GAP_S)
            state: BayState = "free" if i % 2 == 0 else "occupied"
            at = time.monotonic()
            gateway.occupancy.on_reading(BayReading(bay, state, "modbus:bench",
                                                    gateway.clock.stamp()))
            made.append((at, *_expected(gateway, base.document(), state)))
        await asyncio.sleep(LAND_S)
    finally:
        gateway.stop()
        await asyncio.wait_for(daemon, 30)
        sign.close()
    entrance = _delays(made, sign.frames, ENTRANCE, 1)
    level = _delays(made, sign.frames, LEVEL, 2)
    board = gateway.sign_board.summary() if gateway.sign_board is not None else []
    return {
        "changes": changes,
        "p50_change_to_entrance_sign_ms": _ms(percentile(entrance, 0.50)),
        "p99_change_to_entrance_sign_ms": _ms(percentile(entrance, 0.99)),
        "max_change_to_entrance_sign_ms": _ms(max(entrance)),
        "p50_change_to_level_sign_ms": _ms(percentile(level, 0.50)),
        "p99_change_to_level_sign_ms": _ms(percentile(level, 0.99)),
        "max_change_to_level_sign_ms": _ms(max(level)),
        "within_500_ms": sum(d <= 500 for d in entrance + level) / len(entrance + level),
        "frames": len(sign.frames),
        "sign_timeouts": sum(row["counters"]["timeouts"] for row in board),
    }


async def _settled(gateway: Any, quiet_s: float = 1.0) -> None:
    """Wait until the lot's availability has not changed for `quiet_s`: the parts that start
    with the daemon (a counted level's restore, say) are in, and no change is in flight."""
    while True:
        revision = gateway.availability.revision
        await asyncio.sleep(quiet_s)
        if gateway.availability.revision == revision:
            return


def _expected(gateway: Any, before: dict[str, Any], state: BayState) -> tuple[str, str]:
    """What the entrance and the level sign show once the change is in: the counts `before`
    the bench began (the bay taken), and one more free bay while the bay is free (whether or
    not the change before it has landed yet)."""
    from gateway.core.signs import display

    step = 1 if state == "free" else 0
    entrance = next(s for s in gateway.settings.signs if s.station == ENTRANCE)
    lot = display("auto", free=before["lot"]["free"] + step, offset=entrance.offset,
                  lot_state=before["lotState"])
    floor = display("auto", free=before["floors"]["1"]["free"] + step)
    assert lot is not None
    assert floor is not None
    return lot.text, floor.text


def _delays(made: list[tuple[float, str, str]], frames: list[tuple[float, int, str]],
            address: int, index: int) -> list[float]:
    """Each change's delay (ms) to the first frame after it that shows its count."""
    delays = []
    for change in made:
        at, wanted = change[0], change[index]
        seen = next((t for t, a, text in frames if t >= at and a == address and text == wanted),
                    None)
        if seen is None:
            raise RuntimeError(f"a change never reached sign {address} (wanted {wanted!r})")
        delays.append((seen - at) * 1000.0)
    return delays


def _ms(value: float | None) -> float:
    return round(value or 0.0, 2)
