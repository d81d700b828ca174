"""gateway.runtime.aio: cancelling a task and waiting for it to unwind; the one backoff."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random

import pytest
import structlog

from gateway.runtime.aio import Backoff, TaskSet, cancel_and_wait


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


def test_backoff_doubles_up_to_the_cap_without_jitter() -> None:
    delays = list(itertools.islice(Backoff(0.5, 5.0).delays(), 6))
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_backoff_grows_with_jitter_up_to_the_cap_and_starts_over() -> None:
    policy = Backoff(0.5, 8.0, random.Random(1))
    delays = list(itertools.islice(policy.delays(), 10))
    assert delays[0] == 0.5  # the first retry is at the base
    assert all(0.5 <= d <= 8.0 for d in delays)
    assert max(delays[5:]) > 2.0  # it did grow
    assert len(set(delays)) == len(delays)  # jittered, not in step
    assert next(policy.delays()) == 0.5  # a fresh run of retries starts at the base


def test_one_policy_shared_by_two_users_keeps_them_apart() -> None:
    policy = Backoff(1.0, 8.0)
    first, second = policy.delays(), policy.delays()
    assert [next(first) for _ in range(3)] == [1.0, 2.0, 4.0]
    assert next(second) == 1.0


@pytest.mark.parametrize(("initial", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_a_backoff_that_would_spin_or_shrink_is_refused(initial: float, cap: float) -> None:
    with pytest.raises(ValueError, match="0 < initial_s <= max_s"):
        Backoff(initial, cap)


async def test_a_task_set_keeps_its_tasks_until_they_end() -> None:
    tasks = TaskSet("test")
    release = asyncio.Event()
    task = tasks.spawn(release.wait(), name="waiter")
    assert len(tasks) == 1
    assert task.get_name() == "waiter"
    release.set()
    await task
    await asyncio.sleep(0)  # the done callback runs on the next turn
    assert len(tasks) == 0


async def test_a_failed_task_is_logged_with_its_owner() -> None:
    tasks = TaskSet("barrier", lane="entry-1")

    async def fail() -> None:
        raise OSError("disk full")

    with structlog.testing.capture_logs() as logs:
        task = tasks.spawn(fail(), name="alarm")
        with contextlib.suppress(OSError):
            await task
        await asyncio.sleep(0)
    assert {"event": "task_failed", "owner": "barrier", "task": "alarm",
            "error": "OSError('disk full')", "lane": "entry-1",
            "log_level": "error"} in logs
    assert len(tasks) == 0


async def test_cancel_and_wait_ends_every_task_and_runs_their_cleanup() -> None:
    tasks = TaskSet("test")
    cleaned: list[int] = []

    async def worker(n: int) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append(n)

    for n in range(3):
        tasks.spawn(worker(n))
    await asyncio.sleep(0)
    await tasks.cancel_and_wait()
    assert sorted(cleaned) == [0, 1, 2]
    await asyncio.sleep(0)
    assert len(tasks) == 0
