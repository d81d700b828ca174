"""One plain `sqlite3` connection on a thread of its own, driven from the event loop.

A SQLite call blocks (a commit waits for its fsync), so it never runs on the loop. Each
connection gets one dedicated thread, and the loop hands it whole functions: a transaction
of any size is one hop there and back, however many statements it runs. The hop is a queue
to the thread and `call_soon_threadsafe` back, nothing more: `run_in_executor`'s
concurrent.futures machinery cost the journal about 8% of its group-commit throughput.

A loop that keeps its own time (the simulator's virtual time) must not let time pass while
a hop is out: `calls_in_flight(loop)` says how many are.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# Per loop: calls handed to a connection's thread whose result is not back on the loop yet.
# Only the loop's own thread changes its count.
_in_flight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = (
    weakref.WeakKeyDictionary())


def calls_in_flight(loop: asyncio.AbstractEventLoop) -> int:
    """How many calls made on `loop` are on a journal connection's thread right now."""
    return _in_flight.get(loop, 0)


class _Call(Generic[T]):
    """One hop: the function for the thread, and the loop's future for its result."""

    __slots__ = ("fn", "future", "loop")

    def __init__(self, fn: Callable[[sqlite3.Connection], T], loop: asyncio.AbstractEventLoop
                 ) -> None:
        self.fn = fn
        self.loop = loop
        self.future: asyncio.Future[T] = loop.create_future()

    def settle(self, result: Any, error: BaseException | None) -> None:
        """On the loop: the call is back."""
        _in_flight[self.loop] -= 1
        if self.future.cancelled():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)


class DbThread:
    """A connection that lives, is used and is closed on one thread; `run` is one hop."""

    def __init__(self, name: str, connect: Callable[[], sqlite3.Connection]) -> None:
        """Prefer `await DbThread.open(...)`, which also opens the connection."""
        self._calls: queue.SimpleQueue[_Call[Any] | None] = queue.SimpleQueue()
        # Not a daemon: like any open file, a connection is closed, not abandoned.
        self._thread = threading.Thread(target=self._serve, args=(connect,), name=name)

    @classmethod
    async def open(cls, name: str, connect: Callable[[], sqlite3.Connection]) -> DbThread:
        """Start a thread called `name` and open the connection there with `connect()`."""
        self = cls(name, connect)
        self._thread.start()
        try:
            await self.run(_nothing)  # the thread connects before its first call
        except BaseException:
            self._stop()
            raise
        return self

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run `fn(connection)` on the connection's thread, in the order handed in; await it."""
        call = _Call(fn, asyncio.get_running_loop())
        _in_flight[call.loop] = _in_flight.get(call.loop, 0) + 1
        self._calls.put(call)
        return call.future

    async def close(self) -> None:
        """Close the connection, then let its thread end."""
        try:
            await self.run(sqlite3.Connection.close)
        finally:
            self._stop()

    def _stop(self) -> None:
        self._calls.put(None)
        self._thread.join()  # at once: the thread has nothing left to do

    def _serve(self, connect: Callable[[], sqlite3.Connection]) -> None:
        conn: sqlite3.Connection | None = None  # this thread's alone
        while (call := self._calls.get()) is not None:
            result: Any = None
            error: BaseException | None = None
            try:
                if conn is None:
                    conn = connect()
                result = call.fn(conn)
            except BaseException as e:  # handed to the caller, whatever it is
                error = e
            with contextlib.suppress(RuntimeError):  # the loop was closed: nobody waits
                call.loop.call_soon_threadsafe(call.settle, result, error)


def _nothing(conn: sqlite3.Connection) -> None:
    """A call that only makes the thread connect."""


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """Commit what the block wrote, or roll all of it back if the block raises."""
    try:
        yield
        conn.commit()
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the first error is the one to report
                conn.rollback()
        raise
