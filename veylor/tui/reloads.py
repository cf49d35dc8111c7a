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
from ..report import plural
from .live import LISTED, Live, count, field, more, outside, section
from .text import problem, step, when


def unchanged(reload: ReloadView) -> bool:
    """A reload that found the configuration the same (no change, nothing refused)."""
    return not reload["changes"] and not reload["problems"] and not reload["error"]


def reload_lines(view: StateView) -> list[Text]:
    """The lines of the last reload of ``view`` (the last that changed something when the
    last only checked), and the reload counters."""
    reloads = view["reloads"]
    now = view["time"]
    lines = [field("reloads", f"{count(reloads.get('ok', 0))} ok, {count(reloads.get('failed', 0))} failed")]
    last = reloads["last"]
    if last is None:
        return [*lines, Text("no reload yet: the configuration is the one Veylor started with")]
    change = reloads.get("last_change")
    if unchanged(last) and change is not None and change["at"] < last["at"]:
        lines += [
            Text(f"checked, no change ({when(last['at'], now)})", "bold"),
            field("trigger", outside(last.get("reason", "-"))),
            section("the last change"),
        ]
        last = change
    return lines + outcome_lines(last, now)


def outcome_lines(reload: ReloadView, now: float) -> list[Text]:
    """One reload: when, why, what came of it, and its changes, steps and problems (the
    first ``LISTED`` of each: the others are counted)."""
    changes, steps, problems = reload["changes"], reload.get("steps") or [], reload["problems"]
    if problems:
        outcome = Text("refused: the running configuration stays", "bold red")
    elif reload["error"]:
        outcome = Text(outside(f"not applied: {reload['error']}"), "bold red")
    elif reload.get("applied"):
        config = outside(f"generation {reload.get('generation')} (config {reload.get('digest', '-')[:12]})")
        outcome = Text(f"applied: {config}", "green")
    else:
        outcome = Text("checked, no change")
    took = reload.get("duration_ms")
    lines = [
        field("at", when(reload["at"], now) + ("" if took is None else f", took {took:,.1f} ms")),
        field("trigger", outside(reload.get("reason", "-"))),
        field("outcome", outcome),
        field(
            "in all",
            f"{plural(len(changes), 'change')}, {plural(len(steps), 'step')}, "
            f"{plural(len(problems), 'problem')}",
        ),
        section(f"changes ({count(len(changes))})"),
        *[Text(outside(f"  {change}")) for change in changes[:LISTED]],
        *more(len(changes), "change"),
        section(f"steps ({count(len(steps))})"),
    ]
    for entry in steps[:LISTED]:
        details = entry.get("detail") or []
        lines.append(Text(outside(f"  {step(entry)}")))
        lines += [Text(outside(f"      {detail}")) for detail in details[:LISTED]]
        lines += more(len(details), "detail")
    lines += more(len(steps), "step")
    lines.append(section(f"problems ({count(len(problems))})"))
    for found in problems[:LISTED]:
        warning = "warning: " if found.get("severity") == "warning" else ""
        lines.append(Text(outside(f"  {warning}{problem(found)}"), "yellow" if warning else "red"))
    return lines + more(len(problems), "problem")


class Reloads(Live):
    """The last reload, whole (see :func:`reload_lines`)."""

    def describe(self, view: StateView) -> tuple[str, list[Text]]:
        return "the last reload (escape closes)", reload_lines(view)
