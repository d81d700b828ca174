"""The MQTT client (gateway/sync/mqtt.py) against a real mosquitto: PUBACKs, link loss, refusal.

The broker is frozen with SIGSTOP where a test needs it silent: its socket stays open, so
only the PUBACK (or the keepalive) can tell the client anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.sync.mqtt import EventClient, Message, MqttError
from tests.sync import mosquitto
from tests.sync.mosquitto import Mosquitto, free_port

pytestmark = pytest.mark.slow  # a real mosquitto, stopped and killed

broker = mosquitto.broker  # the fixture: a fresh mosquitto per test
WILL = "test/presence"


def client(port: int, name: str, *, keepalive_s: int = 60, username: str | None = None,
           password: str | None = None) -> EventClient:
    return EventClient("127.0.0.1", port, client_id=name, will_topic=WILL,
                       keepalive_s=keepalive_s, username=username, password=password,
                       timeout_s=5.0)


@contextlib.contextmanager
def frozen(broker: Mosquitto) -> Iterator[None]:
    """The broker stops answering (SIGSTOP) and goes on where it was (SIGCONT)."""
    assert broker.process is not None
    broker.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        if broker.process is not None:
            broker.process.send_signal(signal.SIGCONT)


@contextlib.asynccontextmanager
async def listening(port: int, topic: str) -> AsyncIterator[asyncio.Queue[Message]]:
    """A second client that puts every message on `topic` in the queue it yields."""
    received: asyncio.Queue[Message] = asyncio.Queue()

    async def pump(backend: EventClient) -> None:
        async for message in backend.messages:
            received.put_nowait(message)

    async with client(port, "backend") as backend:
        await backend.subscribe(topic, qos=1)
        task = asyncio.create_task(pump(backend))
        try:
            yield received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, MqttError):
                await task


async def test_publishes_leave_in_order_and_each_future_resolves_on_its_puback(
        broker: Mosquitto) -> None:
    async with listening(broker.port, "test/events") as received, \
            client(broker.port, "gateway") as gateway:
        with frozen(broker):
            futures = [gateway.publish_nowait("test/events", f"event {i}") for i in range(50)]
            await asyncio.sleep(0.3)
            assert not any(f.done() for f in futures)  # sent, but no PUBACK yet
        await asyncio.wait_for(asyncio.gather(*futures), 5)
        got = [(await asyncio.wait_for(received.get(), 5)).payload for _ in range(50)]
    assert got == [f"event {i}".encode() for i in range(50)]


async def test_a_lost_link_fails_what_waits_for_a_puback_and_ends_the_messages(
        broker: Mosquitto) -> None:
    async with client(broker.port, "gateway") as gateway:
        await gateway.subscribe("test/commands", qos=1)
        with frozen(broker):
            pending = gateway.publish_nowait("test/events", "never acked")
            single = asyncio.create_task(gateway.publish("test/state", b"{}", retain=True))
            await asyncio.sleep(0.2)
            broker.stop(hard=True)  # SIGKILL reaches a stopped process: the socket closes
        with pytest.raises(MqttError, match="connection lost"):
            await asyncio.wait_for(pending, 5)
        with pytest.raises(MqttError, match="connection lost"):
            await single
        with pytest.raises(MqttError, match="connection lost"):
            await anext(gateway.messages)
        with pytest.raises(MqttError, match="cannot publish"):
            gateway.publish_nowait("test/events", "too late")


async def test_a_silent_broker_is_noticed_by_the_keepalive(broker: Mosquitto) -> None:
    async with client(broker.port, "gateway", keepalive_s=1) as gateway:
        with frozen(broker), pytest.raises(MqttError, match="connection lost"):
            await asyncio.wait_for(anext(gateway.messages), 6)


async def test_a_publish_times_out_as_a_link_error(broker: Mosquitto) -> None:
    async with client(broker.port, "gateway") as gateway:
        with frozen(broker), pytest.raises(MqttError, match="no PUBACK"):
            await gateway.publish("test/events", "late", timeout=0.3)


async def test_inbound_messages_carry_topic_payload_and_retain(broker: Mosquitto) -> None:
    async with client(broker.port, "backend") as backend:
        await backend.publish("test/config/tariffs", b'{"v":1}', retain=True)
    async with client(broker.port, "gateway") as gateway:
        await gateway.subscribe("test/config/+", qos=1)
        messages = gateway.messages
        retained = await asyncio.wait_for(anext(messages), 5)
        await gateway.publish("test/config/permits", b"[]")
        live = await asyncio.wait_for(anext(messages), 5)
    assert retained == Message("test/config/tariffs", b'{"v":1}', retain=True)
    assert live == Message("test/config/permits", b"[]", retain=False)


async def test_messages_unread_when_the_link_ends_can_be_taken_out(broker: Mosquitto) -> None:
    async with client(broker.port, "gateway") as gateway:
        await gateway.subscribe("test/commands", qos=1)
        for i in range(3):
            await gateway.publish("test/commands", b"%d" % i)
        await asyncio.sleep(0.3)  # delivered back to us, not read
        broker.stop()
        await asyncio.sleep(0.5)
        with pytest.raises(MqttError):
            await gateway.publish("test/events", b"x", timeout=1)  # the link is over
        unread = gateway.take_unread()
        with pytest.raises(MqttError):
            await asyncio.wait_for(anext(gateway.messages), 1)  # still ends
    assert [m.payload for m in unread] == [b"0", b"1", b"2"]


async def test_a_clean_exit_says_goodbye_so_the_will_is_not_published(
        broker: Mosquitto) -> None:
    # (The will of a gateway that dies is checked by the SIGKILL test in test_sync.py.)
    async with listening(broker.port, WILL) as presence:
        async with client(broker.port, "gateway"):
            pass
        await asyncio.sleep(0.5)
        assert presence.empty()


async def test_an_unreachable_broker_is_an_mqtt_error() -> None:
    port = free_port()
    with pytest.raises(MqttError, match=f"cannot connect to 127.0.0.1:{port}"):
        async with client(port, "gateway"):
            pass


async def test_a_wrong_password_is_refused(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker", passwords={"gw-1": "right"}) as secured:
        with pytest.raises(MqttError, match="refused the connection"):
            async with client(secured.port, "gateway", username="gw-1", password="wrong"):
                pass
        async with client(secured.port, "gateway", username="gw-1",
                          password="right") as gateway:
            await gateway.publish("test/events", "hello")
