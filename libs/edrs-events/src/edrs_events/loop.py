"""The event loop the SDK's own processes run on (the relay CLI): uvloop where it is installed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (the `fast` extra; edrs-core depends on it),
    else asyncio's own: the same code, with less CPU per socket operation, task and callback."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on `event_loop_factory()`'s loop."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(main)
