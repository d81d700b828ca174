"""gateway.runtime.aio: cancelling a task and waiting for it to unwind; the one backoff."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from gateway.runtime.aio import Backoff, cancel_and_wait


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
