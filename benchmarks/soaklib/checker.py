"""What a soak client reads, checked byte for byte: every message is a pure function of
its number (common.py's layout, timestamp 0), so the expected stream of each wire is
made once, in chunks, and a read is one comparison with it; frames are parsed only at a
ping or a discontinuity."""

from __future__ import annotations

from common import FRAME, SEQ_AT, SEQ_LEN, SIZE, SYMBOLS, frame_head, message

MAX_RUNS = 10_000  # discontinuities kept per client (a broken relay must not exhaust memory)


def payload(seq: int) -> bytes:
    """Message number ``seq``: always the same bytes (timestamp 0)."""
    return message(seq, 0, SYMBOLS[seq & 1])


class Expected:
    """The byte stream a client should read, one wire's framing: frames of consecutive
    numbers, made in chunks on demand and shared by every client of that wire."""

    CHUNK = 4096  # frames per chunk (about 2 s at 2,000 msg/s)
    KEEP = 12  # chunks kept (oldest made first out)

    def __init__(self, header: bytes) -> None:
        self.header = header
        self.chunks: dict[int, bytes] = {}

    def chunk(self, i: int) -> bytes:
        c = self.chunks.get(i)
        if c is None:
            header = self.header
            base = i * self.CHUNK
            c = b"".join([header + payload(s) for s in range(base, base + self.CHUNK)])
            if len(self.chunks) >= self.KEEP:
                del self.chunks[next(iter(self.chunks))]
            self.chunks[i] = c
        return c

    def get(self, seq: int, off: int, n: int) -> bytes:
        """``n`` bytes of the expected stream from byte ``off`` of frame ``seq``."""
        i, r = divmod(seq, self.CHUNK)
        start = r * FRAME + off
        c = self.chunk(i)
        end = start + n
        if end <= len(c):
            return c[start:end]
        parts = [c[start:]]
        need = end - len(c)
        while need > 0:
            i += 1
            c = self.chunk(i)
            parts.append(c[:need])
            need -= len(c)
        return b"".join(parts)


class Stream:
    """What one client read, checked against :class:`Expected`.

    ``runs``: the contiguous ranges of numbers received, in order ([first, last] each); a
    new run starts at each discontinuity. ``back``: frames whose number did not go up (a
    duplicate or a reorder); ``corrupt``: frames that are not exactly the expected bytes.
    """

    __slots__ = (
        "back",
        "carry",
        "closed",
        "corrupt",
        "e",
        "exp",
        "foreign",
        "off",
        "pings",
        "pong",
        "runs",
        "ws",
    )

    def __init__(self, exp: Expected, ws: bool, pong) -> None:  # type: ignore[no-untyped-def]
        self.exp = exp
        self.ws = ws
        self.pong = pong
        self.e: int | None = None  # the next number expected
        self.off = 0  # bytes of frame e already read (and matched)
        self.carry = b""  # bytes not yet understood (slow path)
        self.runs: list[list[int]] = []
        self.back = 0
        self.corrupt = 0
        self.foreign = 0
        self.pings = 0
        self.closed = False  # a close frame came

    def feed(self, data: bytes) -> None:
        e = self.e
        if e is not None and not self.carry:
            if data == self.exp.get(e, self.off, len(data)):  # nearly always: one memcmp
                n, self.off = divmod(self.off + len(data), FRAME)
                if n:
                    self.e = e + n
                    self.runs[-1][1] = e + n - 1
                return
            if self.off:
                data = self.exp.get(e, 0, self.off) + data  # back to the frame's start
                self.off = 0
        elif self.carry:
            data = self.carry + data
            self.carry = b""
        self._slow(data)

    def _slow(self, buf: bytes) -> None:
        pos, end = 0, len(buf)
        while (head := frame_head(buf, pos, self.ws)) is not None:
            opcode, start, length = head
            if end - start < length:
                break
            body = buf[start : start + length]
            frame_end = start + length
            if opcode == 1 and length == SIZE:
                try:
                    seq = int(body[SEQ_AT : SEQ_AT + SEQ_LEN])
                except ValueError:
                    seq = -1
                if seq < 0 or buf[pos:frame_end] != self.exp.get(seq, 0, FRAME):
                    self.corrupt += 1
                else:
                    self._number(seq)
            elif opcode == 9:
                self.pings += 1
                self.pong(body)
            elif opcode == 8:
                self.closed = True
            elif opcode != 10:
                self.foreign += 1
            pos = frame_end
        rem = buf[pos:]
        if rem and self.e is not None and rem == self.exp.get(self.e, 0, len(rem)):
            self.off = len(rem)
        else:
            self.carry = rem

    def _number(self, seq: int) -> None:
        e = self.e
        if e is not None and seq == e:
            self.runs[-1][1] = seq
        else:
            if e is not None and seq < e:
                self.back += 1
            if len(self.runs) < MAX_RUNS:
                self.runs.append([seq, seq])
        self.e = seq + 1
