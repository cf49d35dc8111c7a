"""Property (hypothesis), end to end: whatever the interleaving of updates, clients that
join, clients that drop and clients that come back with ``?since=``, no client sees a
message twice or misses one it should get. A real Veylor (in-process), a real upstream,
real WebSocket clients on 127.0.0.1.

Each step waits until Veylor has dispatched what was sent, so the moment a client joins
is known: a joiner's stream must be exactly the latest message of each key sent before
it (the model: :func:`model_snapshot`), the end marker, then every later message; a
client that comes back, every message after the last it read, then live."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import pytest
from helpers import Upstream, eventually, free_port, veylor_inprocess, ws_client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # (150 examples of a real relay: about 8 s)

END = '{"type":"snapshot_end"}'
MAX_KEYS = 3
STEP = st.one_of(
    st.tuples(st.just("msg"), st.sampled_from(["A", "B", "C", "D", None])),  # None: no key
    st.tuples(st.just("join"), st.just(0)),
    st.tuples(st.just("drop"), st.integers(0, 7)),  # the i-th client (modulo those open)
    st.tuples(st.just("back"), st.integers(0, 7)),  # the i-th dropped client (modulo)
)


def model_snapshot(sent: list[str | None], max_keys: int) -> list[int]:
    """The numbers of a joiner's snapshot after ``sent`` (message n+1 has key sent[n]):
    the latest of each of the max_keys most recently updated keys, oldest first."""
    latest = {key: n for n, key in enumerate(sent, 1) if key is not None}
    return sorted(sorted(latest.values(), reverse=True)[:max_keys])


class Client:
    """One connection's record: what it must get (``want``) and what it got."""

    def __init__(self, conn, want: list[int | str]) -> None:
        self.conn = conn
        self.want = want
        self.got: list[int | str] = []
        self.task = asyncio.create_task(self.read())

    async def read(self) -> None:
        async for message in self.conn:
            self.got.append(message if message == END else json.loads(message)["n"])

    def last_number(self) -> int:
        return max((n for n in self.got if isinstance(n, int)), default=0)


async def scenario(steps: list[tuple[str, object]]) -> None:
    up = await Upstream().start()
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="veylor-latest-prop-"))
    config = f"""
sources: {{feed: {{url: "{up.url}"}}}}
endpoints: {{ws: {{websocket: {{host: 127.0.0.1, port: {port}}}}}}}
routes:
  ticks:
    from: feed
    to: ws
    snapshot: {{by: s, max_keys: {MAX_KEYS}, end: '{END}'}}
    resume: {{by: n}}
"""
    try:
        async with veylor_inprocess(tmp, config) as rt:
            await up.wait_connected()
            route = rt.stats.route("ticks")
            sent: list[str | None] = []
            open_: list[Client] = []
            dropped: list[Client] = []
            done: list[Client] = []
            url = f"ws://127.0.0.1:{port}/"
            for kind, arg in steps:
                if kind == "msg":
                    key = arg if isinstance(arg, str) else None
                    n = len(sent) + 1
                    await up.send(json.dumps({"n": n} if key is None else {"s": key, "n": n}))
                    sent.append(key)
                    await eventually(lambda n=n: route.messages == n, what=f"message {n} dispatched")
                    for c in open_:
                        c.want.append(n)
                elif kind == "join":
                    open_.append(Client(await ws_client(url), [*model_snapshot(sent, MAX_KEYS), END]))
                elif kind == "drop" and open_:
                    c = open_.pop(int(arg) % len(open_))  # type: ignore[call-overload]
                    # it reads what was sent to it, then goes
                    await eventually(lambda c=c: len(c.got) >= len(c.want), what="a client read its messages")
                    await c.conn.close()
                    await c.task
                    done.append(c)
                    dropped.append(c)
                elif kind == "back" and dropped:
                    was = dropped.pop(int(arg) % len(dropped))  # type: ignore[call-overload]
                    since = was.last_number()
                    want: list[int | str] = list(range(since + 1, len(sent) + 1))
                    open_.append(Client(await ws_client(f"{url}?since={since}"), want))
            for c in open_:
                await eventually(
                    lambda c=c: len(c.got) >= len(c.want), timeout=10, what="a client's messages"
                )
                await asyncio.sleep(0)
            for c in [*done, *open_]:
                assert c.got == c.want, f"got {c.got}, want {c.want}"
            for c in open_:
                await c.conn.close()
                await c.task
    finally:
        await up.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=1, max_size=30))
def test_no_client_sees_a_message_twice_or_misses_one_it_should_get(steps):
    asyncio.run(scenario(steps))
