"""Join the batches that concurrent requests send to a store into one round trip.

Under load, many requests tokenize at the same moment, and each store call costs system calls
and a wake-up of the store server that take longer than the work itself. A ``Coalescer``
collects the calls made during one turn of the event loop and sends them as one batch, then
hands each caller its own slice of the results. Each caller's items stay together and in order,
so a batch behaves as if the calls had run one after another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class _Call[Item, Result]:
    items: list[Item]
    future: asyncio.Future[list[Result]]


class Coalescer[Item, Result]:
    """Runs ``send`` on the items of the calls made in one event-loop turn, together.

    ``send`` must return one result per item, in order. When it raises, every call of that
    batch raises a copy of the error, so no exception object is shared between requests.
    """

    def __init__(
        self, send: Callable[[list[Item]], Awaitable[list[Result]]], *, max_items: int = 1000
    ) -> None:
        self._send = send
        self._max_items = max_items
        self._waiting: list[_Call[Item, Result]] = []
        self._waiting_items = 0
        self._flush_scheduled = False
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        loop = asyncio.get_running_loop()
        call: _Call[Item, Result] = _Call(list(items), loop.create_future())
        self._waiting.append(call)
        self._waiting_items += len(call.items)
        if self._waiting_items >= self._max_items:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await call.future

    def _flush(self) -> None:
        self._flush_scheduled = False
        calls, self._waiting, self._waiting_items = self._waiting, [], 0
        if not calls:
            return
        task = asyncio.ensure_future(self._send_batch(calls))
        # The loop keeps only a weak reference to tasks; this set keeps them alive.
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _send_batch(self, calls: list[_Call[Item, Result]]) -> None:
        items = [item for call in calls for item in call.items]
        try:
            results = await self._send(items)
            if len(results) != len(items):
                raise RuntimeError(f"store returned {len(results)} results for {len(items)} items")
        except Exception as error:
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(_copy(error))
            return
        except BaseException:
            for call in calls:
                call.future.cancel()
            raise

        start = 0
        for call in calls:
            end = start + len(call.items)
            if not call.future.done():
                call.future.set_result(results[start:end])
            start = end


def _copy(error: Exception) -> Exception:
    """Return a new exception like ``error`` for one caller, chained to the original."""
    try:
        copy = type(error)(*error.args)
    except TypeError:
        return error
    copy.__cause__ = error.__cause__ or error
    return copy
