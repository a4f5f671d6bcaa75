"""open_pipe: bounded typed pipes, their statistics and end-of-input cascade."""

from __future__ import annotations

import dataclasses
import math

import pytest
import trio
import trio.testing

from actors.channels import PipeReceiver, PipeSender, PipeStatistics, open_pipe
from actors.testing import collect


@pytest.mark.parametrize("capacity", [-1, 1.5, math.inf, True, "3"])
def test_capacity_must_be_a_finite_whole_number(capacity: object) -> None:
    with pytest.raises(ValueError, match="pipe 'emails' needs a finite whole-number capacity"):
        open_pipe[int]("emails", capacity)  # type: ignore[arg-type]


async def test_statistics_count_everything() -> None:
    tx, rx = open_pipe[int]("emails", 3)
    assert tx.name == rx.name == "emails"
    assert repr(tx) == "<PipeSender 'emails' capacity=3>"
    assert repr(rx) == "<PipeReceiver 'emails' capacity=3>"
    assert tx.free_room() == 3
    await tx.send(1)
    tx.send_nowait(2)
    assert tx.free_room() == 1
    assert await rx.receive() == 1
    tx.send_nowait(3)
    tx.send_nowait(4)
    assert tx.free_room() == 0
    with pytest.raises(trio.WouldBlock):
        tx.send_nowait(5)
    assert rx.receive_nowait() == 2
    expected = PipeStatistics(
        name="emails",
        capacity=3,
        depth=2,
        peak_depth=3,
        sent_total=4,
        received_total=2,
        open_senders=1,
        open_receivers=1,
        waiting_senders=0,
        waiting_receivers=0,
    )
    assert tx.statistics() == rx.statistics() == expected
    with pytest.raises(dataclasses.FrozenInstanceError):
        expected.depth = 0  # type: ignore[misc]


async def test_receive_nowait_on_empty_pipe_would_block() -> None:
    tx, rx = open_pipe[str]("events", 1)
    with pytest.raises(trio.WouldBlock):
        rx.receive_nowait()
    tx.close()
    with pytest.raises(trio.EndOfChannel):
        rx.receive_nowait()
    assert rx.statistics().received_total == 0


async def test_full_pipe_pushes_back_on_the_sender(autojump_clock: trio.abc.Clock) -> None:
    tx, rx = open_pipe[int]("claims", 1)
    sent_at: list[float] = []

    async def produce() -> None:
        async with tx:
            for item in range(3):
                await tx.send(item)
                sent_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        await trio.sleep(1)
        assert rx.statistics().waiting_senders == 1
        assert rx.statistics().depth == 1
        received: list[int] = []
        async with rx:
            async for item in rx:
                received.append(item)
                await trio.sleep(1)
    # The first send fits the buffer; each later one waits for the consumer to take an item.
    assert sent_at == [0, 1, 2]
    assert received == [0, 1, 2]
    assert trio.current_time() == 4


async def test_rendezvous_pipe_counts_waiting_receivers(autojump_clock: trio.abc.Clock) -> None:
    tx, rx = open_pipe[int]("handoff", 0)
    assert tx.free_room() == 0
    received: list[int] = []

    async def consume() -> None:
        received.append(await rx.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        assert tx.statistics().waiting_receivers == 2
        assert tx.free_room() == 2
        tx.send_nowait(7)
        tx.send_nowait(8)
        assert tx.free_room() == 0
    assert sorted(received) == [7, 8]
    assert tx.statistics().peak_depth == 0


async def test_end_of_input_waits_for_every_sender_clone() -> None:
    tx, rx = open_pipe[int]("results", 4)
    tx_two = tx.clone()
    assert isinstance(tx_two, PipeSender)
    with tx_two:
        await tx_two.send(1)
    assert tx_two.free_room() == 0  # this end is closed
    assert tx.free_room() == 3
    assert rx.statistics().open_senders == 1
    assert rx.receive_nowait() == 1
    with pytest.raises(trio.WouldBlock):  # not the end yet: tx is still open
        rx.receive_nowait()
    async with tx:
        tx.send_nowait(2)
    assert rx.statistics().open_senders == 0
    assert await collect(rx) == [2]


async def test_receiver_clones_share_items_and_close_cascades_upstream() -> None:
    tx, rx = open_pipe[int]("results", 4)
    rx_two = rx.clone()
    assert isinstance(rx_two, PipeReceiver)
    tx.send_nowait(1)
    tx.send_nowait(2)
    assert rx.receive_nowait() == 1
    assert await rx_two.receive() == 2
    assert rx.statistics().received_total == 2
    assert tx.statistics().open_receivers == 2
    with rx:
        pass
    await rx_two.aclose()
    assert tx.free_room() == 0
    with pytest.raises(trio.BrokenResourceError):
        await tx.send(3)
    with pytest.raises(trio.BrokenResourceError):
        tx.send_nowait(3)
    assert tx.statistics().sent_total == 2


async def test_closed_receiver_end_refuses_to_receive() -> None:
    tx, rx = open_pipe[int]("results", 1)
    async with rx:
        tx.send_nowait(1)
    with pytest.raises(trio.ClosedResourceError):
        rx.receive_nowait()
    await tx.aclose()
    with pytest.raises(trio.ClosedResourceError):
        tx.send_nowait(2)


async def test_pipe_ends_are_trio_channels() -> None:
    tx, rx = open_pipe[bytes]("raw", 1)
    send: trio.abc.SendChannel[bytes] = tx
    receive: trio.abc.ReceiveChannel[bytes] = rx
    await send.send(b"x")
    assert await receive.receive() == b"x"
