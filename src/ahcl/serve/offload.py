"""The blocking part of a request (decode, encode, search, a durable write), run on the
server's own threads so that the event loop goes on serving other requests meanwhile.

A sync FastAPI endpoint gets the same through anyio's thread pool, but each hand-off there costs
about 0.2 ms of CPU under the interpreter lock (measured: 214 µs against 39 µs through
:meth:`asyncio.loop.run_in_executor` on a :class:`~concurrent.futures.ThreadPoolExecutor`, whose
queue is in C), and a sync endpoint with a return annotation pays it twice (its response is
validated on the pool too). The hot endpoints are ``async def`` and hand their blocking part
to :func:`run_blocking`.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

R = TypeVar("R")

#: Requests whose blocking parts run at once, in one server process (anyio's default limit);
#: more wait for a thread. Concurrent ones are batched into shared forward passes and log records.
REQUEST_THREADS = 40
_POOL = ThreadPoolExecutor(max_workers=REQUEST_THREADS, thread_name_prefix="ahcl-request")


async def run_blocking(fn: Callable[..., R], *args: Any) -> R:
    """``fn(*args)`` on a request thread; its result, or its exception raised here."""
    return await asyncio.get_running_loop().run_in_executor(_POOL, functools.partial(fn, *args))
