"""Wire formats: our WebSocket frames parse as websockets parses them; Unix framings."""

from __future__ import annotations

import struct

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from veylor.runtime.wire import (
    FrameError,
    LengthPrefixedDecoder,
    LineDecoder,
    length_prefixed_frame,
    line_frame,
    ws_frame,
)


def parse_client_side(data: bytes) -> list[Frame]:
    """Parse server-to-client frames with websockets' own parser (as a client would)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        gen = Frame.parse(reader.read_exact, mask=False)
        try:
            next(gen)
        except StopIteration as done:
            frames.append(done.value)
    return frames


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
@pytest.mark.parametrize("is_text", [True, False])
def test_ws_frame_round_trips_through_websockets_parser(size, is_text):
    payload = (b"a" * size) if is_text else bytes(range(256)) * (size // 256) + b"\x00" * (size % 256)
    (frame,) = parse_client_side(ws_frame(payload, is_text))
    assert frame.fin and frame.opcode is (Opcode.TEXT if is_text else Opcode.BINARY)
    assert bytes(frame.data) == payload
    assert not (frame.rsv1 or frame.rsv2 or frame.rsv3)


def test_joined_frames_stay_whole_frames():
    joined = b"".join(ws_frame(f"m{i}".encode() * i, i % 2 == 0) for i in range(50))
    frames = parse_client_side(joined)
    assert [bytes(f.data) for f in frames] == [f"m{i}".encode() * i for i in range(50)]


def test_length_prefixed_frame():
    assert length_prefixed_frame(b"abc") == b"\x00\x00\x00\x03abc"


def test_line_frame():
    assert line_frame(b"abc", True) == b"abc\n"
    assert line_frame(b"abc", False) is None
    assert line_frame(b"a\nb", True) is None


def test_length_prefixed_decoder_split_and_joined():
    data = b"".join(struct.pack("!I", len(p)) + p for p in (b"one", b"two!", b"x" * 1000))
    for step in (1, 3, 7, len(data)):
        decoder = LengthPrefixedDecoder(4096)
        out = []
        for i in range(0, len(data), step):
            out.extend(decoder.feed(data[i : i + step]))
        assert out == [b"one", b"two!", b"x" * 1000]
        assert decoder.buffer == bytearray()


@pytest.mark.parametrize(("header", "why"), [(0, "length 0"), (5000, "exceeds 4096")])
def test_length_prefixed_decoder_rejects_bad_lengths_before_buffering(header, why):
    decoder = LengthPrefixedDecoder(4096)
    with pytest.raises(FrameError, match=why):
        list(decoder.feed(struct.pack("!I", header)))


def test_line_decoder():
    decoder = LineDecoder(10)
    assert list(decoder.feed(b"ab\r\ncd\n\nef")) == [b"ab", b"cd"]
    assert list(decoder.feed(b"g\n")) == [b"efg"]
    with pytest.raises(FrameError):
        list(decoder.feed(b"x" * 11))
