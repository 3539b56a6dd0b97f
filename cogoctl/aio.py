"""asyncio helpers.

`wait_event` exists because Python 3.11's asyncio.wait_for can swallow a cancellation that
arrives as the awaited thing completes (fixed in 3.12): a task cancelled at that moment goes on
running, and whoever awaits it hangs. asyncio.wait never swallows it.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set or `timeout` passes; return whether it is set."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return event.is_set()
