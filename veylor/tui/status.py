"""The two lines on top. The summary, as ``nats top``'s header: are the upstreams up,
how many clients, how much goes out, is anything dropped, is any client slow now (red
or yellow when it is). The status line: the configuration's generation and what the
last reload did (its changes and steps, or the problem that refused it; ``l`` shows
all of it); STALE, and why, when the state cannot be read; PAUSED while ``p`` holds
the screen."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from rich.text import Text
from textual.widgets import Static

from ..observe.view import ReloadView, StateView
from ..printable import printable
from ..report import plural
from .pane import CHUNK
from .rates import Rates, drops, human_rate
from .text import duration, problem, step


class Summary(Static):
    """One line: sources up of all, clients, deliveries and drops per second, slow
    clients now, and where the state is read from."""

    def show(self, view: StateView, rates: Rates, where: str) -> Iterator[None]:
        """Sum ``view`` up, in pieces (thousands of endpoints: the loop the relay shares
        is served between two)."""
        sources = view["sources"]
        up = sum(1 for s in sources.values() if s["state"] == "connected")
        clients = slow = total_lost = 0
        out = moving = 0.0
        known = False  # a rate out is known (a second snapshot came)
        rates_of = rates.rates
        for i, (name, e) in enumerate(view["endpoints"].items(), 1):
            if i % CHUNK == 0:
                yield
            clients += e["clients"]
            slow += e.get("slow_clients", 0)
            total_lost += drops(e)
            rate = rates_of.get(("endpoint", name))
            if rate is not None:
                known = True
                out += rate
            moving += rates_of.get(("drops", name)) or 0.0
        line = Text()
        line.append(f"{up}/{len(sources)} sources up", "bold red" if up < len(sources) else "green")
        line.append(f" · {clients:,} client{'s' * (clients != 1)} · ")
        line.append(human_rate(out if known else None))
        line.append(" out · ")
        line.append(f"{human_rate(moving)} dropped", "bold red" if moving else "yellow" if total_lost else "")
        line.append(" · ")
        line.append(f"{slow:,} slow client{'s' * (slow != 1)}", "bold yellow" if slow else "")
        line.append(printable(f" · {where}"), "dim")
        self.update(line, layout=False)


class StatusLine(Static):
    """One line: the generation and the last reload, or why the state is stale."""

    def show(self, view: StateView, paused: bool) -> None:
        """The generation and the last reload of ``view``."""
        config = view["config"]
        status = Text(f"generation {config['generation']} (config {config['digest'][:12]}) · ")
        last = view["reloads"]["last"]
        if last is None:
            status.append("no reload yet")
        elif last["problems"]:
            status.append("last reload refused", "bold red")
            status.append(printable(": " + problem(last["problems"][0])))
        elif last["error"]:
            status.append("last reload not applied", "bold red")
            status.append(printable(f": {last['error']}"))
        else:
            change = view["reloads"].get("last_change")
            if not last["changes"] and change is not None and change["at"] < last["at"]:
                # a later check that changed nothing does not hide the last real change
                status.append(printable(f"checked, no change {ago(view, last['at'])} · "))
                last = change
            steps = last.get("steps") or []
            status.append(
                printable(
                    f"last reload ({ago(view, last['at'])}): "
                    + ("; ".join(last["changes"][:3]) or "no changes")
                )
            )
            if steps:
                status.append(
                    printable(
                        f" ({plural(len(steps), 'step')}: "
                        + ", ".join(step(s) for s in steps[:4])
                        + ("…)" if len(steps) > 4 else ")")
                    )
                )
        if paused:
            status = Text.assemble(("PAUSED ", "bold yellow"), status)
        self.update(status, layout=False)

    def stale(self, why: str) -> None:
        """The state cannot be read (``why``): the last one stays on the screen."""
        self.update(Text.assemble(("STALE", "bold red"), " ", printable(why)), layout=False)


def ago(view: StateView, at: float) -> str:
    """How long before ``view`` a reload was: ``3m12s ago``."""
    return f"{duration(view['time'] - at)} ago"


def reload_note(outcome: ReloadView) -> tuple[str, Literal["information", "error"]]:
    """What a reload asked for with ``r`` did, as a notification: its changes and steps,
    or its first problem (an error)."""
    if outcome.get("problems"):
        return printable(problem(outcome["problems"][0])), "error"
    if outcome.get("error"):
        return printable(str(outcome["error"])), "error"
    steps = outcome.get("steps") or []
    text = "; ".join(outcome.get("changes", [])) or "no changes"
    if steps:
        text += "\nsteps: " + ", ".join(step(s) for s in steps)
    return printable(text, lines=True), "information"
