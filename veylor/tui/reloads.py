"""The last reload, whole (``l``): when and why it ran, what it did, and every change,
step and problem it had.

The status line has room for the first three changes or the first problem; a reload
that adds fifty routes, or is refused for three mistakes in two files, is read here,
scrolling. A later reload that found nothing to change does not hide the last one that
did: it says "checked, no change" and shows that one (the view's ``last_change``).
"""

from __future__ import annotations

from rich.text import Text

from ..observe.view import ReloadView, StateView
from ..printable import printable
from ..report import plural
from .live import Live, count, field, section
from .text import problem, step, when


def unchanged(reload: ReloadView) -> bool:
    """A reload that found the configuration the same (no change, nothing refused)."""
    return not reload["changes"] and not reload["problems"] and not reload["error"]


def reload_lines(view: StateView) -> list[Text]:
    """The lines of the last reload of ``view`` (the last that changed something when the
    last only checked), and the reload counters."""
    reloads = view["reloads"]
    now = view["time"]
    lines = [field("reloads", f"{count(reloads['ok'])} ok, {count(reloads['failed'])} failed")]
    last = reloads["last"]
    if last is None:
        return [*lines, Text("no reload yet: the configuration is the one Veylor started with")]
    change = reloads.get("last_change")
    if unchanged(last) and change is not None and change["at"] < last["at"]:
        lines += [
            Text(f"checked, no change ({when(last['at'], now)})", "bold"),
            field("trigger", printable(last["reason"])),
            section("the last change"),
        ]
        last = change
    return lines + outcome_lines(last, now)


def outcome_lines(reload: ReloadView, now: float) -> list[Text]:
    """One reload: when, why, what came of it, and all its changes, steps and problems."""
    if reload["problems"]:
        outcome = Text("refused: the running configuration stays", "bold red")
    elif reload["error"]:
        outcome = Text(printable(f"not applied: {reload['error']}"), "bold red")
    elif reload["applied"]:
        outcome = Text(
            f"applied: generation {reload['generation']} (config {reload['digest'][:12]})", "green"
        )
    else:
        outcome = Text("checked, no change")
    lines = [
        field("at", f"{when(reload['at'], now)}, took {reload['duration_ms']:,.1f} ms"),
        field("trigger", printable(reload["reason"])),
        field("outcome", outcome),
        field(
            "in all",
            f"{plural(len(reload['changes']), 'change')}, {plural(len(reload['steps']), 'step')}, "
            f"{plural(len(reload['problems']), 'problem')}",
        ),
        section(f"changes ({count(len(reload['changes']))})"),
        *[Text(printable(f"  {change}")) for change in reload["changes"]],
        section(f"steps ({count(len(reload['steps']))})"),
    ]
    for entry in reload["steps"]:
        lines.append(Text(printable(f"  {step(entry)}")))
        lines += [Text(printable(f"      {detail}")) for detail in entry.get("detail") or []]
    lines.append(section(f"problems ({count(len(reload['problems']))})"))
    for found in reload["problems"]:
        warning = "warning: " if found.get("severity") == "warning" else ""
        lines.append(Text(printable(f"  {warning}{problem(found)}"), "yellow" if warning else "red"))
    return lines


class Reloads(Live):
    """The last reload, whole (see :func:`reload_lines`)."""

    def describe(self, view: StateView) -> tuple[str, list[Text]]:
        return "the last reload (escape closes)", reload_lines(view)
