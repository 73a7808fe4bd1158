"""The event loop's side of the writer's futures: many records' word, few wake-ups.

Under `audit` every call waits twice for the writer (its `pending` record, then its `calls`
record). `asyncio.wait_for(asyncio.wrap_future(future), timeout)` per wait costs the event loop
two futures, a task switch, a timer and a wake-up through asyncio's self-pipe (a system call on
the writer's side, another on the loop's) per record; and with a 30 s timeout, the loop's timer
heap holds every wait of the last 30 s (tens of thousands under load, each push and clean-up a
Python comparison per level). `profile_call.py --body 1k-clean --durability audit`: the event
loop's CPU per call went from 2.44 ms to 2.07 ms with `Waiters` (`async`: 1.85 ms).

`Waiters` keeps one loop future per record, wakes the loop once for all the records the writer
settled since the loop last looked (the writer settles a whole group commit in a burst), and
expires waits that outlast the timeout with one timer for all of them.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

SWEEP_INTERVAL = 1.0


class Waiters:
    """Await concurrent futures from one event loop. `wait(future)` is True once it resolved
    with a result, False if it failed with one of `failures` or was not done within `timeout`
    seconds; any other exception it failed with is raised. A wait that times out or whose task
    is cancelled cancels its future, as `asyncio.wrap_future` does (the writer skips a record
    it had not begun to write)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float,
                 failures: tuple[type[BaseException], ...]) -> None:
        self.loop = loop
        self.timeout = timeout
        self.failures = failures
        # Waits in the order they began: their deadlines, too (one timeout for all).
        self._waiting: dict[Future, tuple[asyncio.Future, float]] = {}
        self._settled: list[Future] = []  # settled by the writer, not yet seen by the loop
        self._lock = threading.Lock()
        self._woken = False  # a wake-up is on its way to the loop
        self._sweep: asyncio.TimerHandle | None = None

    async def wait(self, future: Future) -> bool:
        waiter = self.loop.create_future()
        self._waiting[future] = (waiter, self.loop.time() + self.timeout)
        if self._sweep is None:
            self._sweep = self.loop.call_later(SWEEP_INTERVAL, self._expire)
        future.add_done_callback(self._done)  # at once, on this thread, if it is done already
        try:
            if not await waiter:
                future.cancel()
                return False
            return True
        except asyncio.CancelledError:
            future.cancel()
            raise
        finally:
            self._waiting.pop(future, None)

    def _done(self, future: Future) -> None:
        """On the writer's thread: note `future`, and wake the loop unless a wake-up is on its
        way already."""
        with self._lock:
            self._settled.append(future)
            if self._woken:
                return
            self._woken = True
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def _wake(self) -> None:
        with self._lock:
            settled, self._settled, self._woken = self._settled, [], False
        for future in settled:
            entry = self._waiting.get(future)
            if entry is None or entry[0].done():
                continue  # timed out, or its waiter was cancelled
            waiter = entry[0]
            error = None if future.cancelled() else future.exception()
            if error is None or isinstance(error, self.failures):
                waiter.set_result(not future.cancelled() and error is None)
            else:
                waiter.set_exception(error)

    def _expire(self) -> None:
        now = self.loop.time()
        for waiter, deadline in list(self._waiting.values()):
            if deadline > now:
                break  # the rest began later
            if not waiter.done():
                waiter.set_result(False)
        self._sweep = self.loop.call_later(SWEEP_INTERVAL, self._expire) if self._waiting else None

    def __len__(self) -> int:
        return len(self._waiting)

    def __repr__(self) -> str:
        return f"<Waiters {len(self)} waiting>"
