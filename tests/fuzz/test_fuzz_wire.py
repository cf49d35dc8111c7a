"""Fuzzing the wire of a real, running Veylor with hypothesis.

One Veylor process for the module (``python -m veylor``, as in production), fed by a
real upstream WebSocket server on 127.0.0.1, with three endpoints: a WebSocket
endpoint, a Unix endpoint in the length-prefixed framing and one in the lines
framing; one route from the upstream to all three with ``upstream: true``, so that
what clients send is forwarded upstream. A control client on each endpoint stays
connected for the whole module.

Each example opens an attacking connection to one endpoint and sends it bytes, in
random chunks, while the upstream sends numbered messages:

- WebSocket (a raw TCP socket to 127.0.0.1): random bytes instead of a handshake;
  valid handshakes cut, bit-flipped or padded with garbage; after a valid handshake,
  frames built by hand (masked, as a client's must be), then damaged: bits flipped,
  cut, lengths changed (giant, non-minimal, longer than sent), reserved bits and
  opcodes set, control frames fragmented or over 125 bytes, continuation frames with
  no message, close frames with invalid codes or reasons, text that is not UTF-8;
- length-prefixed: random bytes; frames with lengths of 0, over the limit, giant,
  longer or shorter than what follows, cut;
- lines: random bytes; lines that are not UTF-8, hold NULs or CRs, are longer than
  the limit, or never end.

Properties, after every example:

- **Veylor lives**: the process is running and its admin endpoint answers
  ``/healthz`` with 200;
- **only the offending client is closed**: the control client of every endpoint is
  still connected;
- **the control clients lose nothing**: each received every message the upstream
  sent, in order, and nothing else (the messages are numbered);
- **the upstream connection is never cut**: the upstream has seen exactly one
  connection from Veylor since the module started, and it is still open;
- **no unexpected error**: nothing in Veylor's log since the example began is a
  traceback or an ERROR line (a client's garbage is reported at INFO or WARNING).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
import struct
import tempfile
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
import pytest_asyncio
from helpers import UnixClient, Upstream, VeylorProcess, eventually, free_port, raw_handshake, ws_client
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

pytestmark = [
    pytest.mark.fuzz,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.asyncio(loop_scope="module"),
]

WS_MAX = 64 * 1024  # the endpoints' max_message_size (a smaller limit: oversized inputs stay cheap)
LINES_MAX = 4 * 1024
DELIVERY_TIMEOUT = 5.0  # generous (deliveries take milliseconds): a bug detector, not a latency test
# No shrinking: the examples share one process, so that after a failure the state is
# not fresh and a "smaller" failing example would mislead (see Arena.attack); the
# first failing example is the one reported, and it is small anyway. No "explain"
# phase either (on Python < 3.12 it traces every line).
FUZZ = settings(
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ------------------------------------------------------------------ the arena


@dataclass
class Control:
    """A client connected for the whole module; records every message it receives."""

    name: str
    received: list[str] = field(default_factory=list)
    closed: str | None = None  # why it ended, if it did
    task: asyncio.Task[None] | None = None

    def open(self) -> bool:
        return self.closed is None and self.task is not None and not self.task.done()


class Arena:
    """Veylor, its upstream and the control clients, for the whole module."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vfz-"))  # short: Unix socket paths
        self.upstream = Upstream()
        self.port = free_port()
        self.admin = free_port()
        self.lp_path = self.dir / "lp.sock"
        self.lines_path = self.dir / "lines.sock"
        self.veylor: VeylorProcess | None = None
        self.controls: dict[str, Control] = {}
        self.sent: list[str] = []
        self.upstream_conn: Any = None
        self.broken: PropertyBroken | None = None  # what an example broke, once one has
        self.broken_in = ""  # in which test
        self._closers: list[Callable[[], Awaitable[None]]] = []

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> Arena:
        await self.upstream.start()
        config = self.dir / "config.yaml"
        config.write_text(
            textwrap.dedent(
                f"""
                sources:
                  up: {{url: "{self.upstream.url}"}}
                admin: {{listen: "127.0.0.1:{self.admin}"}}
                endpoints:
                  ws: {{websocket: {{host: 127.0.0.1, port: {self.port}, path: /ws}}, max_message_size: {WS_MAX}}}
                  lp: {{unix: {{path: "{self.lp_path}", framing: length-prefixed}}, max_message_size: {WS_MAX}}}
                  lines: {{unix: {{path: "{self.lines_path}", framing: lines}}, max_message_size: {LINES_MAX}}}
                routes:
                  all: {{from: up, to: [ws, lp, lines], upstream: true}}
                """
            )
        )
        self.veylor = await VeylorProcess("-c", str(config)).start()
        await self.upstream.wait_connected()
        self.upstream_conn = self.upstream.connections[0]
        await self._control_ws()
        await self._control_lp()
        await self._control_lines()
        # Every control client is reached: one message through, then the fuzzing begins.
        problems = await self.delivered(1)
        assert not problems, problems
        return self

    async def _control_ws(self) -> None:
        conn: ClientConnection = await ws_client(self.ws_url)
        control = self.controls["ws"] = Control("ws")

        async def read() -> None:
            try:
                async for message in conn:
                    control.received.append(message if isinstance(message, str) else message.decode())
            except ConnectionClosed as exc:
                control.closed = repr(exc)
            control.closed = control.closed or f"closed: {conn.close_code} {conn.close_reason}"

        control.task = asyncio.create_task(read())
        self._closers.append(conn.close)

    async def _control_lp(self) -> None:
        client = await UnixClient.connect(self.lp_path)
        control = self.controls["lp"] = Control("lp")

        async def read() -> None:
            try:
                while True:
                    control.received.append((await client.recv(timeout=3600)).decode())
            except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
                control.closed = repr(exc)

        control.task = asyncio.create_task(read())
        self._closers.append(client.close)

    async def _control_lines(self) -> None:
        reader, writer = await asyncio.open_unix_connection(str(self.lines_path))
        control = self.controls["lines"] = Control("lines")

        async def read() -> None:
            try:
                while line := await reader.readline():
                    control.received.append(line.decode().removesuffix("\n"))
            except (ConnectionError, ValueError) as exc:
                control.closed = repr(exc)
            control.closed = control.closed or "end of stream"

        async def close() -> None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

        control.task = asyncio.create_task(read())
        self._closers.append(close)

    async def ready(self) -> str:
        """The current test's name, after a restart if an earlier test left the arena
        broken or stopped: a test of its own deserves a fresh arena."""
        test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
        stopped = self.veylor is None or self.veylor.proc is None or self.veylor.proc.returncode is not None
        if stopped or (self.broken is not None and self.broken_in != test):
            await self.restart()
        return test

    async def restart(self) -> None:
        await self.stop()
        self.__init__()  # type: ignore[misc]
        await self.start()

    async def stop(self) -> None:
        for control in self.controls.values():
            if control.task is not None:
                control.task.cancel()
        for close in self._closers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(close(), 5)
        if self.veylor is not None:
            await self.veylor.stop()
        await self.upstream.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -------------------------------------------------------------- one example

    async def send(self, count: int = 1) -> None:
        """``count`` numbered text messages from the upstream."""
        for _ in range(count):
            message = f"m{len(self.sent):08d}"
            self.sent.append(message)
            await self.upstream_conn.send(message)

    async def delivered(self, count: int = 0) -> list[str]:
        """Send ``count`` more numbered messages; what went wrong with any control client."""
        await self.send(count)
        want = len(self.sent)
        with contextlib.suppress(AssertionError):  # said precisely below
            await eventually(
                lambda: all(len(c.received) >= want or not c.open() for c in self.controls.values()),
                timeout=DELIVERY_TIMEOUT,
                what="every message at every control client",
            )
        problems = []
        for control in self.controls.values():
            got = control.received
            if not control.open():
                problems.append(f"the {control.name} control client was disconnected: {control.closed}")
            elif got != self.sent:
                got_set, sent_set = set(got), set(self.sent)
                missing = [m for m in self.sent if m not in got_set]
                extra = [m for m in got if m not in sent_set]
                problems.append(
                    f"the {control.name} control client got {len(got)} of the {len(self.sent)} messages sent: "
                    f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
                    f"unexpected {extra[:5]}, in order: {got == sorted(got)}"
                )
        return problems

    async def healthz(self) -> str | None:
        """What is wrong with ``GET /healthz``, if anything."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.admin), 5)
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                await writer.drain()
                status = await asyncio.wait_for(reader.readline(), 5)
            finally:
                writer.close()
        except (OSError, TimeoutError) as exc:
            return f"/healthz: {exc!r}"
        return None if status.startswith(b"HTTP/1.1 200") else f"/healthz answered {status!r}"

    async def log_quiet(self, quiet: float = 0.005, most: float = 0.1) -> None:
        """Wait until Veylor's log has been quiet for ``quiet`` seconds (``most`` at most):
        its lines reach us through a pipe, a little after what caused them."""
        assert self.veylor is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + most
        while loop.time() < deadline:
            seen = len(self.veylor.lines)
            await asyncio.sleep(quiet)
            if len(self.veylor.lines) == seen:
                return

    async def violations(self, log_from: int) -> list[PropertyBroken]:
        """Every property of the module, checked after an example: those that do not hold."""
        assert self.veylor is not None and self.veylor.proc is not None
        found: list[PropertyBroken] = [ControlClientHurt(p) for p in await self.delivered(2)]
        if self.veylor.proc.returncode is not None:
            found.append(VeylorDown(f"Veylor exited with {self.veylor.proc.returncode}"))
        elif (health := await self.healthz()) is not None:
            found.append(VeylorDown(health))
        if self.upstream.connects != 1:
            found.append(UpstreamCut(f"the upstream saw {self.upstream.connects} connections from Veylor"))
        elif self.upstream.connections != [self.upstream_conn] or self.upstream_conn.state is not State.OPEN:
            found.append(UpstreamCut("the upstream connection was cut"))
        await self.log_quiet()
        new = self.veylor.lines[log_from:]
        errors = [line for line in new if "Traceback" in line or " ERROR " in line or " CRITICAL " in line]
        if errors:
            found.append(UnexpectedError("unexpected errors in Veylor's log:\n" + "\n".join(errors)))
        if found:
            found.append(type(found[0])("Veylor's log during the example:\n" + "\n".join(new[-40:])))
        return found

    async def attack(
        self, connect: Callable[[], Awaitable[Attacker]], chunks: list[bytes], reset: bool = False
    ) -> None:
        """One example: numbered messages before, between and after the chunks an
        attacking client sends (then it leaves, with a TCP reset if ``reset``); then the
        properties.

        The arena is shared by the examples: one that breaks a lasting property (a
        control client hurt, Veylor down, the upstream cut) leaves it broken. The first
        example that fails is the culprit (these tests do not shrink); the next ones of
        the same test fail at once with the same exception, saying so, and the next
        test gets a fresh arena."""
        test = await self.ready()
        if self.broken is not None:
            fail(type(self.broken), f"an earlier example broke the arena: {self.broken}")
        assert self.veylor is not None
        log_from = len(self.veylor.lines)
        await self.send(2)
        attacker = await connect()
        try:
            for chunk in chunks:
                await attacker.write(chunk)
                await self.send(1)
                await asyncio.sleep(0.001)
            await attacker.settle()
        finally:
            await attacker.close(reset)
        found = await self.violations(log_from)
        self.judge(found, test, f"{len(chunks)} chunks {chunks!r}"[:3000])

    def judge(self, found: list[PropertyBroken], test: str, culprit: str) -> None:
        """Raise what ``found`` says, if anything (one exception type per property, so
        that hypothesis tells them apart); remember a lasting one as the arena's state."""
        if any(not isinstance(f, UnexpectedError) for f in found):
            kind = next(type(f) for f in found if not isinstance(f, UnexpectedError))
            self.broken = kind("\n".join([*map(str, found), f"the example: {culprit}"]))
            self.broken_in = test
            fail(kind, "\n".join(map(str, found)))
        if found:
            fail(UnexpectedError, "\n".join(map(str, found)))


class PropertyBroken(AssertionError):
    """A property of the module does not hold."""


def fail(kind: type[PropertyBroken], text: str) -> NoReturn:
    """Raise ``kind``, always from this line: hypothesis tells failures apart by their
    type and where they are raised, and replays a failing example expecting the same."""
    raise kind(text)


class ControlClientHurt(PropertyBroken):
    """A control client was disconnected, or lost, reordered or got extra messages."""


class VeylorDown(PropertyBroken):
    """The process exited, or its admin endpoint does not answer /healthz with 200."""


class UpstreamCut(PropertyBroken):
    """The upstream connection was closed (and perhaps opened again)."""


class UnexpectedError(PropertyBroken):
    """A traceback or an ERROR line in Veylor's log."""


class Attacker:
    """A raw client connection (TCP or Unix) that writes what it is given and reads
    whatever comes back (so that Veylor never waits on it), ignoring errors: Veylor
    may close it at any point."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.eof = asyncio.Event()
        self.received = 0
        self._drain = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                self.received += len(data)
        except (ConnectionError, OSError):
            pass
        self.eof.set()

    async def write(self, data: bytes) -> None:
        if self.writer.is_closing():
            return
        with contextlib.suppress(ConnectionError, OSError):
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), 2)

    async def settle(self) -> None:
        """Let Veylor read it all and answer (or close it): briefly."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.eof.wait(), 0.02)

    async def close(self, reset: bool = False) -> None:
        if reset:
            sock = self.writer.get_extra_info("socket")
            if sock is not None and sock.family != socket.AF_UNIX:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.writer.transport.abort()
        else:
            self.writer.close()
        self._drain.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._drain


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def arena() -> AsyncIterator[Arena]:
    a = Arena()
    try:
        await a.start()
        yield a
    finally:
        await a.stop()


async def tcp(port: int, handshake: bytes | None = None) -> Attacker:
    """A raw TCP client; with ``handshake``, sent and its 101 answer read first."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    if handshake is not None:
        writer.write(handshake)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
    return Attacker(reader, writer)


async def unix(path: Path) -> Attacker:
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 5)
    return Attacker(reader, writer)


# ------------------------------------------------------------------ byte-level strategies


SPECIAL_BYTES = [
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\r",
    b"\n",
    b"\r\n",
    b"\x81",
    b"\x88",
]


@st.composite
def damaged(draw: st.DrawFn, blob: bytes, most: int = 3) -> bytes:
    """``blob`` with up to ``most`` mutations: bits flipped, bytes inserted or deleted,
    a cut, a part repeated."""
    for _ in range(draw(st.integers(0, most))):
        op = draw(st.sampled_from(["flip", "flip", "insert", "delete", "cut", "repeat"]))
        at = draw(st.integers(0, len(blob)))
        if op == "flip" and blob:
            at = min(at, len(blob) - 1)
            blob = blob[:at] + bytes([blob[at] ^ (1 << draw(st.integers(0, 7)))]) + blob[at + 1 :]
        elif op == "insert":
            extra = draw(st.one_of(st.sampled_from(SPECIAL_BYTES), st.binary(min_size=1, max_size=8)))
            blob = blob[:at] + extra + blob[at:]
        elif op == "delete":
            blob = blob[:at] + blob[at + draw(st.integers(1, 8)) :]
        elif op == "cut":
            blob = blob[:at]
        elif op == "repeat":
            end = draw(st.integers(at, min(len(blob), at + 16)))
            blob = blob[:end] + blob[at:end] + blob[end:]
    return blob


@st.composite
def chunked(draw: st.DrawFn, blob: bytes) -> list[bytes]:
    """``blob`` split at random points: decoders must not care where reads end."""
    if not blob:
        return [b""]
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(blob) - 1)), max_size=4, unique=True)))
    bounds = [0, *cuts, len(blob)]
    return [blob[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def payloads() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")),  # may hold lone surrogates
        st.binary(max_size=40),
        st.sampled_from([b"", b"\xff\xfe", b"ok \xe2\x82", b"\xe2\x82\xac", b'{"op": "x"}', b"\x00\x00"]),
    )


# ------------------------------------------------------------------ WebSocket frames


CLOSE_CODES = [
    1000,
    1001,
    1002,
    1003,
    1004,
    1005,
    1006,
    1007,
    1008,
    1009,
    1011,
    1015,
    999,
    0,
    2999,
    3000,
    4999,
    5000,
    65535,
]


@dataclass
class Frame:
    """A client frame, built by hand (RFC 6455 5.2)."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0  # the three reserved bits
    masked: bool = True
    mask: bytes = b"\x11\x22\x33\x44"
    length_form: str = "minimal"  # or "16", "64": a longer length encoding than needed
    declared: int | None = None  # a length other than the payload's

    def encode(self) -> bytes:
        n = len(self.payload) if self.declared is None else self.declared
        head = bytes([(0x80 if self.fin else 0) | (self.rsv << 4) | self.opcode])
        mask_bit = 0x80 if self.masked else 0
        form = self.length_form
        if form == "minimal":
            form = "7" if n < 126 else "16" if n < 65536 else "64"
        if form == "7" and n < 126:
            head += bytes([mask_bit | n])
        elif form in ("7", "16") and n < 65536:
            head += bytes([mask_bit | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([mask_bit | 127]) + (n % 2**64).to_bytes(8, "big")
        if not self.masked:
            return head + self.payload
        body = bytes(b ^ self.mask[i % 4] for i, b in enumerate(self.payload))
        return head + self.mask + body


def close_payload() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.just(b""),
        st.binary(min_size=1, max_size=1),  # a 1-byte close payload is invalid
        st.builds(
            lambda code, reason: code.to_bytes(2, "big") + reason,
            st.sampled_from(CLOSE_CODES),
            st.one_of(
                st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=20)
            ),
        ),
    )


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    kind = draw(st.sampled_from(["text", "binary", "cont", "close", "ping", "pong", "reserved"]))
    if kind == "close":
        opcode, payload = 8, draw(close_payload())
    elif kind in ("ping", "pong"):
        opcode = 9 if kind == "ping" else 10
        payload = draw(
            st.one_of(st.binary(max_size=20), st.binary(min_size=120, max_size=130))
        )  # over 125: invalid
    elif kind == "reserved":
        opcode, payload = draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])), draw(payloads())
    else:
        opcode, payload = {"text": 1, "binary": 2, "cont": 0}[kind], draw(payloads())
    frame = Frame(opcode, payload, fin=draw(st.sampled_from([True, True, True, False])))
    # Now and then, what a client must not do.
    if draw(st.integers(0, 5)) == 0:
        frame.rsv = draw(st.integers(1, 7))
    if draw(st.integers(0, 7)) == 0:
        frame.masked = False
    if draw(st.integers(0, 5)) == 0:
        frame.length_form = draw(st.sampled_from(["16", "64"]))
    if draw(st.integers(0, 5)) == 0:
        frame.declared = draw(
            st.one_of(
                st.sampled_from(
                    [0, 125, 126, 127, WS_MAX, WS_MAX + 1, 2**20 + 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1]
                ),
                st.integers(0, len(payload) + 10),
            )
        )
    frame.mask = draw(st.sampled_from([b"\x11\x22\x33\x44", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff"]))
    return frame


@st.composite
def messages(draw: st.DrawFn) -> list[Frame]:
    """A fragmented message (its control frames in between, perhaps), valid or not."""
    first = draw(st.sampled_from([1, 2]))
    parts = draw(st.lists(payloads(), min_size=2, max_size=4))
    out = [Frame(first, parts[0], fin=False)]
    for i, part in enumerate(parts[1:], start=1):
        if draw(st.booleans()):
            out.append(draw(frames()))  # a ping between fragments is fine; a data frame is not
        out.append(Frame(0, part, fin=i == len(parts) - 1))
    return out


@st.composite
def frame_streams(draw: st.DrawFn) -> bytes:
    """Frames and fragmented messages, encoded, then damaged as bytes."""
    items = draw(st.lists(st.one_of(frames().map(lambda f: [f]), messages()), min_size=1, max_size=5))
    blob = b"".join(f.encode() for group in items for f in group)
    return draw(damaged(blob, most=draw(st.sampled_from([0, 0, 1, 3]))))


# ------------------------------------------------------------------ HTTP handshakes


HEADER_LINES = [
    b"Sec-WebSocket-Version: 8\r\n",
    b"Sec-WebSocket-Version: 13, 13\r\n",
    b"Sec-WebSocket-Key: short\r\n",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    b"Sec-WebSocket-Extensions: x-unknown, permessage-deflate; server_max_window_bits=7\r\n",
    b"Sec-WebSocket-Protocol: chat, , \xff\r\n",
    b"Upgrade: h2c\r\n",
    b"Connection: close\r\n",
    b"Content-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Origin: http://evil.example\r\n",
    b"Authorization: Bearer x\r\n",
    b"X-Long: " + b"a" * 9000 + b"\r\n",
    b"X-Bin: \x00\x01\xff\r\n",
    b" folded continuation\r\n",
    b"NoColon\r\n",
    b"Host: 127.0.0.1\r\n",
]


@st.composite
def handshakes(draw: st.DrawFn) -> bytes:
    """An opening handshake, perhaps invalid, perhaps followed by frames (pipelined)."""
    path = draw(
        st.sampled_from(["/ws", "/ws?x=1", "/", "/other", "*", "/ws#f", "//ws", "/ws/../ws", "/\xff"])
    )
    method = draw(st.sampled_from(["GET", "GET", "POST", "get", "CONNECT", "GET\x00"]))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x"]))
    base = raw_handshake("/ws").split(b"\r\n", 1)[1]  # the headers, without the request line
    request = f"{method} {path} {version}\r\n".encode("utf-8", "surrogateescape") + base
    extra = draw(st.lists(st.sampled_from(HEADER_LINES), max_size=3))
    if extra:
        request = request[:-2] + b"".join(extra) + b"\r\n"
    if draw(st.booleans()):
        request += draw(frame_streams())  # frames right behind the request, in the same write
    return draw(damaged(request, most=draw(st.sampled_from([0, 1, 2]))))


# ------------------------------------------------------------------ Unix framings


@st.composite
def length_prefixed_streams(draw: st.DrawFn) -> bytes:
    """Frames (4-byte big-endian length, payload) with honest or lying lengths."""
    out = b""
    for _ in range(draw(st.integers(1, 5))):
        payload = draw(payloads())
        n = len(payload)
        length = draw(
            st.one_of(
                st.just(n),
                st.just(n),
                st.sampled_from([0, 1, WS_MAX, WS_MAX + 1, 2**31, 2**32 - 1]),
                st.integers(max(0, n - 3), n + 3),
            )
        )
        out += struct.pack("!I", length) + payload
    return draw(damaged(out, most=draw(st.sampled_from([0, 0, 1, 3]))))


@st.composite
def line_streams(draw: st.DrawFn) -> bytes:
    lines = draw(
        st.lists(
            st.one_of(
                payloads().map(lambda b: b.replace(b"\n", b"")),
                st.sampled_from([b"", b"\r", b"\x00", b"a\rb", LINES_MAX * b"x", (LINES_MAX + 1) * b"y"]),
            ),
            min_size=1,
            max_size=5,
        )
    )
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    blob = end.join(lines) + draw(st.sampled_from([end, b""]))  # the last line may never end
    return draw(damaged(blob, most=draw(st.sampled_from([0, 0, 1, 2]))))


# ------------------------------------------------------------------ the tests


def show(what: str, blob: bytes) -> None:
    note(f"{what} ({len(blob)} bytes): {blob[:2000]!r}{' ...' if len(blob) > 2000 else ''}")


@FUZZ
@given(data=st.data())
async def test_websocket_garbage_instead_of_a_handshake(arena: Arena, data: st.DataObject) -> None:
    """Random bytes, or a damaged handshake (with frames behind it), on a fresh TCP
    connection to the WebSocket endpoint's port."""
    blob = data.draw(st.one_of(st.binary(max_size=300), handshakes()), label="bytes")
    show("sent", blob)
    await arena.attack(
        lambda: tcp(arena.port),
        data.draw(chunked(blob), label="chunks"),
        data.draw(st.booleans(), label="reset"),
    )


@FUZZ
@given(data=st.data())
async def test_websocket_frames_after_a_valid_handshake(arena: Arena, data: st.DataObject) -> None:
    """Hand-made client frames, valid or not, damaged or not, after a valid handshake."""
    blob = data.draw(st.one_of(frame_streams(), st.binary(max_size=200)), label="bytes")
    show("sent after the handshake", blob)
    await arena.attack(
        lambda: tcp(arena.port, raw_handshake("/ws")),
        data.draw(chunked(blob), label="chunks"),
        data.draw(st.booleans(), label="reset"),
    )


@FUZZ
@given(data=st.data())
async def test_length_prefixed_unix_garbage(arena: Arena, data: st.DataObject) -> None:
    """Random bytes, and frames with honest or lying lengths, on the length-prefixed endpoint."""
    blob = data.draw(st.one_of(length_prefixed_streams(), st.binary(max_size=300)), label="bytes")
    show("sent", blob)
    await arena.attack(
        lambda: unix(arena.lp_path),
        data.draw(chunked(blob), label="chunks"),
        data.draw(st.booleans(), label="reset"),
    )


@FUZZ
@given(data=st.data())
async def test_lines_unix_garbage(arena: Arena, data: st.DataObject) -> None:
    """Random bytes, and lines valid or not, on the lines endpoint."""
    blob = data.draw(st.one_of(line_streams(), st.binary(max_size=300)), label="bytes")
    show("sent", blob)
    await arena.attack(
        lambda: unix(arena.lines_path),
        data.draw(chunked(blob), label="chunks"),
        data.draw(st.booleans(), label="reset"),
    )


async def test_veylor_stops_cleanly_after_the_fuzzing(arena: Arena) -> None:
    """After the fuzzing (whatever it broke): the process exits 0 on SIGTERM, in order."""
    assert arena.veylor is not None and arena.veylor.proc is not None
    if arena.veylor.proc.returncode is None:
        arena.veylor.signal(signal.SIGTERM)
    assert await arena.veylor.wait(timeout=10) == 0, arena.veylor.log


# ------------------------------------------------------------------ regressions (found by the above)

# A valid handshake and, in the same packet, a frame websockets refuses (here a reserved
# opcode): websockets fails the connection (EOF sent) while it is still CONNECTING, then
# answers the handshake 101 and the connection is OPEN with its transport half-closed.
# Veylor's flush writes to it: uvloop raises "Cannot call write() after write_eof()" in
# Router.flush, which stops there: the endpoints after this one in that pass stay
# "scheduled" and are never flushed again (here the two Unix endpoints: their clients get
# nothing more), and the clients of this endpoint after this one miss that pass.
HANDSHAKE_THEN_BAD_FRAME = raw_handshake("/ws") + b"\x83\x80\x00\x00\x00\x00"


async def test_regression_handshake_and_a_bad_frame_in_one_packet(arena: Arena) -> None:
    """The upstream feed goes on while such clients come and go (the window is a few
    milliseconds: up to 30 tries)."""
    test = await arena.ready()
    assert arena.veylor is not None
    log_from = len(arena.veylor.lines)
    for _ in range(30):
        attacker = await tcp(arena.port)
        await attacker.write(HANDSHAKE_THEN_BAD_FRAME)
        for _ in range(10):  # a message every millisecond or so while Veylor handles it
            await arena.send(1)
            await asyncio.sleep(0.001)
        await attacker.close()
    arena.judge(await arena.violations(log_from), test, repr(HANDSHAKE_THEN_BAD_FRAME))


# A refused handshake (404 here; 400 or 426 alike) and, in the same packet, a frame
# websockets refuses: websockets sends EOF twice and its assertion fails ("AssertionError"
# in send_eof), which Veylor logs as "ERROR ... unexpected internal error", once per
# connection, not throttled (a client can flood the log).
REFUSED_THEN_BAD_FRAME = b"GET /nowhere HTTP/1.1\r\n\r\n\x83\x80\x00\x00\x00\x00"


async def test_regression_refused_handshake_and_a_bad_frame_in_one_packet(arena: Arena) -> None:
    """No ERROR line for a client's garbage (websockets' AssertionError, logged per connection)."""
    test = await arena.ready()
    assert arena.veylor is not None
    log_from = len(arena.veylor.lines)
    for _ in range(20):
        attacker = await tcp(arena.port)
        await attacker.write(REFUSED_THEN_BAD_FRAME)
        await arena.send(1)
        await attacker.settle()
        await attacker.close()
    await asyncio.sleep(0.2)  # Veylor's log lines reach us through a pipe
    arena.judge(await arena.violations(log_from), test, repr(REFUSED_THEN_BAD_FRAME))
