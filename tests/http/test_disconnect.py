"""DisconnectWatch (gateway/http/disconnect.py): a client that leaves, or the end of the shutdown drain, cancels
the request's task; the watch tells its own cancellation from any other.

The ASGI `receive` channel is a queue the test fills; `Channel.consumed()` returns once the watcher has taken
and looked at everything put so far, so each step is ordered without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.http.disconnect import DisconnectWatch
from gateway.state import Drain

Message = dict[str, Any]
BODY: Message = {"type": "http.request", "body": b"", "more_body": False}
DISCONNECT: Message = {"type": "http.disconnect"}


class Channel:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.cancelled = False  # the watcher was stopped while it waited here

    async def receive(self) -> Message:
        try:
            message = await self.queue.get()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.queue.task_done()  # the watcher examines the message before it next awaits
        return message

    async def send(self, *messages: Message) -> None:
        for message in messages:
            self.queue.put_nowait(message)
        await self.queue.join()


class Outcome:
    def __init__(self) -> None:
        self.cancelled = False
        self.absorbed: bool | None = None
        self.cancelling_after: int | None = None  # Task.cancelling() once the watch had its say
        self.finished = False  # the handler ran on to its end after the cancellation


async def next_turn() -> None:
    """Resume after the callbacks already scheduled (one event-loop turn, not a delay)."""
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await done


def handler(
    channel: Channel, outcome: Outcome, shutdown: Drain | None, wait: Awaitable[Any]
) -> Callable[[], Awaitable[DisconnectWatch]]:
    """A request handler waiting on its provider (`wait`) under a watch, the way the pipeline uses one."""

    async def run() -> DisconnectWatch:
        watch = DisconnectWatch(channel.receive, shutdown)
        try:
            await wait
        except asyncio.CancelledError:
            outcome.cancelled = True
            outcome.absorbed = watch.absorb()
            task = asyncio.current_task()
            assert task is not None
            outcome.cancelling_after = task.cancelling()
            if not outcome.absorbed:
                raise
        finally:
            watch.stop()
        outcome.finished = True
        return watch

    return run


def test_a_client_that_disconnects_cancels_the_request_and_the_watch_absorbs_it() -> None:
    async def main() -> tuple[Outcome, DisconnectWatch, bool]:
        channel, outcome = Channel(), Outcome()
        never = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(handler(channel, outcome, Drain(), never)())
        await channel.send(BODY, {"type": "http.request", "body": b"x", "more_body": True})
        still_running = not task.done() and not outcome.cancelled  # other messages cancel nothing
        await channel.send(DISCONNECT)
        watch = await task
        return outcome, watch, still_running

    outcome, watch, still_running = asyncio.run(main())
    assert still_running
    assert (outcome.cancelled, outcome.absorbed, outcome.cancelling_after, outcome.finished) == (True, True, 0, True)
    assert (watch.gone, watch.shut_down) == (True, False)


def test_the_end_of_the_shutdown_drain_cancels_the_request() -> None:
    async def main() -> tuple[Outcome, DisconnectWatch, bool]:
        channel, outcome, shutdown = Channel(), Outcome(), Drain()
        never = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(handler(channel, outcome, shutdown, never)())
        await channel.send(BODY)
        shutdown.set()
        watch = await task
        return outcome, watch, channel.cancelled

    outcome, watch, receive_cancelled = asyncio.run(main())
    assert (outcome.cancelled, outcome.absorbed, outcome.cancelling_after, outcome.finished) == (True, True, 0, True)
    assert (watch.gone, watch.shut_down) == (False, True)
    assert receive_cancelled  # stop() ended the watcher still waiting on the client


def test_a_cancellation_that_is_not_the_watchs_is_not_absorbed() -> None:
    async def main() -> tuple[Outcome, bool]:
        channel, outcome = Channel(), Outcome()
        never = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(handler(channel, outcome, Drain(), never)())
        await channel.send(BODY)  # the handler is waiting now
        task.cancel()  # e.g. the server cancelling the task
        try:
            await task
        except asyncio.CancelledError:
            return outcome, True
        return outcome, False

    outcome, propagated = asyncio.run(main())
    assert propagated
    assert (outcome.cancelled, outcome.absorbed, outcome.cancelling_after, outcome.finished) == (True, False, 1, False)


def test_a_request_that_ends_first_is_never_cancelled_and_stop_ends_the_watchers() -> None:
    async def main() -> tuple[Outcome, DisconnectWatch, bool, int]:
        channel, outcome, shutdown = Channel(), Outcome(), Drain()
        answer = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(handler(channel, outcome, shutdown, answer)())
        await channel.send(BODY)
        answer.set_result("the provider answered")
        watch = await task
        # After stop(): neither a late disconnect nor the shutdown reaches the finished request.
        channel.queue.put_nowait(DISCONNECT)
        shutdown.set()
        for _ in range(3):
            await next_turn()
        return outcome, watch, channel.cancelled, channel.queue.qsize()

    outcome, watch, receive_cancelled, unread = asyncio.run(main())
    assert (outcome.cancelled, outcome.finished) == (False, True)
    assert (watch.gone, watch.shut_down) == (False, False)
    assert receive_cancelled
    assert unread == 1  # nobody reads the channel any more
    # No references left to the task or the watchers (no reference cycle keeping the request alive).
    assert (watch.task, watch._watcher, watch._shutdown) == (None, None, None)


def test_without_a_shutdown_event_only_the_client_is_watched() -> None:
    async def main() -> tuple[Outcome, DisconnectWatch]:
        channel, outcome = Channel(), Outcome()
        never = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(handler(channel, outcome, None, never)())
        await channel.send(DISCONNECT)
        return outcome, await task

    outcome, watch = asyncio.run(main())
    assert (outcome.cancelled, outcome.absorbed, outcome.finished) == (True, True, True)
    assert watch.gone
