"""What Veylor relies on inside nats-py (veylor/runtime/compat.py), and the library
bug it works around, checked against the installed nats-py and a real nats-server.

When one of these fails, nats-py changed under Veylor: read compat's docstring, fix
what it looks at (or drop the work-around if the bug is gone), and update the nats-py
version and the write-up in docs/scale-out.md."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats.aio.client import __version__ as NATS_VERSION  # (the package has none of its own)
from natscluster import nats_cluster, needs_nats

from veylor.runtime import compat

pytestmark = [needs_nats]

# What anyone allowed to publish can send, that nats-py cannot parse (HPUB and PUB
# written by hand: a client library would not write them).
MALFORMED = {
    "status-line": b"HPUB t.a 15 16\r\nNATS/1.0 \xff\xfe\r\n\r\nx\r\n",
    "reply-subject": b"PUB t.a \xff\xfe 1\r\nx\r\n",
    "subject": b"PUB t.\xff\xfe 1\r\nx\r\n",
}


async def raw_send(port: int, data: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await asyncio.wait_for(reader.readline(), 5)  # INFO
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')
        writer.write(data + b"PING\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"PONG"), "not sent"
    finally:
        writer.close()


async def test_veylor_can_tell_that_the_library_read_loop_ended(tmp_path: Path) -> None:
    """compat.reader_ended looks at Client._reading_task: a task while reading, done
    when the loop ended (here: cancelled by hand) under a connection still CONNECTED."""
    async with nats_cluster(tmp_path / "nats") as cluster:
        nc = await nats.connect(cluster.urls[0])
        try:
            assert compat.reader_ended(nc) is False, (
                f"nats-py {NATS_VERSION}: no Client._reading_task (an asyncio.Task) any more: "
                "compat.reader_ended cannot see the read loop"
            )
            nc._reading_task.cancel()
            await asyncio.sleep(0.1)
            assert nc.is_connected and compat.reader_ended(nc) is True
        finally:
            await nc.close()


async def test_veylor_can_hook_the_reset_of_an_ordered_consumer(tmp_path: Path) -> None:
    async with nats_cluster(tmp_path / "nats", jetstream=True) as cluster:
        nc = await nats.connect(cluster.urls[0])
        try:
            js = nc.jetstream()
            await js.add_stream(name="T", subjects=["t.x"])
            sub = await js.subscribe("t.x", stream="T", ordered_consumer=True)
            jsi = compat.ordered_consumer(sub)
            assert jsi is not None and asyncio.iscoroutinefunction(jsi.reset_ordered_consumer), (
                f"nats-py {NATS_VERSION}: an ordered consumer's subscription no longer has "
                "_jsi.reset_ordered_consumer and _sseq: NatsSource._guard_resets is off"
            )
        finally:
            await nc.close()


@pytest.mark.parametrize("shape", list(MALFORMED))
async def test_nats_py_still_stops_reading_on_a_message_it_cannot_parse(tmp_path: Path, shape: str) -> None:
    """The library bug (nats-py 2.16.0): the read loop raises UnicodeDecodeError, logs
    "nats: encountered error" and ends; the connection stays CONNECTED and receives
    nothing more; flush() returns at once (no PING) and only rtt() notices. Should this
    test fail, the bug changed or is fixed: see this module's docstring."""
    async with nats_cluster(tmp_path / "nats") as cluster:
        nc = await nats.connect(cluster.urls[0])
        try:
            got: list[bytes] = []

            async def take(msg: nats.aio.msg.Msg) -> None:
                got.append(msg.data)

            await nc.subscribe("t.>", cb=take)
            await nc.flush()
            await raw_send(cluster.nodes[0].port, MALFORMED[shape])
            # (until the read loop ends, 5 s at most: under the parallel suite's load the
            # server's delivery took more than the fixed 0.5 s this waited, and rtt() then
            # answered: "DID NOT RAISE", though the library had not changed)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while not compat.reader_ended(nc) and loop.time() < deadline:
                await asyncio.sleep(0.05)
            ended = compat.reader_ended(nc)
            assert ended, (
                f"nats-py {NATS_VERSION}: the read loop no longer ends on a {shape} that is not UTF-8"
            )
            await nc.publish("t.after", b"after")
            began = loop.time()
            await nc.flush(timeout=2)
            flushed_in = loop.time() - began
            with pytest.raises(nats.errors.TimeoutError):
                await nc.rtt(timeout=1)
            await asyncio.sleep(0.3)
            assert ended and nc.is_connected and got == [] and flushed_in < 0.5, (
                f"nats-py {NATS_VERSION} no longer stops reading on a {shape} that is not UTF-8 "
                f"(read loop ended: {ended}, connected: {nc.is_connected}, received: {got}, flush took "
                f"{flushed_in:.2f}s): update compat and docs/scale-out.md"
            )
        finally:
            await nc.close()
