"""gateway.runtime.aio: cancelling a task and waiting for it to unwind."""

from __future__ import annotations

import asyncio

from gateway.runtime.aio import cancel_and_wait


async def test_the_tasks_cleanup_has_run_when_it_returns() -> None:
    cleaned = asyncio.Event()

    async def worker() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.set()

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()
    assert cleaned.is_set()


async def test_none_and_finished_tasks_are_fine() -> None:
    await cancel_and_wait(None)
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await cancel_and_wait(done)
    assert done.done()
    assert not done.cancelled()
