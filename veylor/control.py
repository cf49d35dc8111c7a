"""The control plane's hold on a runtime (:class:`Controller`): it diffs each new graph
against the running one, has the runtime execute its steps, and owns the admin
endpoint, whose steps it runs itself, as Vector's controller owns its API server.

An apply is all or nothing until its binds are done: the runtime binds its new
listeners (:meth:`Runtime.bind`), then the controller binds a new admin endpoint; if
either fails, both are taken back and the running graph is untouched. Then the runtime
commits the rest of the plan, and the controller changes the admin endpoint's access
rules in place or closes the old one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .graph import Graph, Op, Plan, diff
from .runtime import Runtime
from .runtime.supervisor import Applied

if TYPE_CHECKING:
    from .config.adminspec import AdminSpec
    from .observe.admin import Admin, Control

SHUTDOWN_TIMEOUT = 4.0  # seconds the admin endpoint gets to close at shutdown (as the runtime's parts)


class Controller:
    """Applies graphs to ``runtime`` and owns the admin endpoint. ``control`` is what the
    admin endpoint reads and drives (the :class:`~veylor.server.Server`); without one,
    the endpoint shows the runtime's state and has no configuration file to reload."""

    def __init__(self, runtime: Runtime, control: Control | None = None) -> None:
        self.runtime = runtime
        self.control = control
        self.admin: Admin | None = None  # the admin endpoint serving now, if configured

    async def start(self, graph: Graph) -> None:
        """Apply the first graph; :class:`~veylor.runtime.StartupError` if something
        cannot be bound (after closing what was)."""
        await self.apply(graph)
        self.runtime.begin()

    async def apply(self, new: Graph, plan: Plan | None = None, base: Graph | None = None) -> Applied:
        """Turn the running graph into ``new`` (see :meth:`Runtime.apply`; ``plan``, if
        given, is used only while ``base`` is still the running graph)."""
        rt = self.runtime
        if plan is None or base is not rt.graph:
            plan = diff(rt.graph, new)
        binding = await rt.bind(new, plan, rt.graph)
        old = self.admin
        try:
            if any(step.op is Op.BIND_ADMIN for step in plan.steps) and new.admin is not None:
                self.admin = await self._bind_admin(new.admin)
        except BaseException:  # (cancelled too)
            self.admin = old
            await binding.undo()
            raise
        applied = await rt.commit(binding)
        self._finish_admin(plan, new, old)
        return applied

    async def _bind_admin(self, spec: AdminSpec) -> Admin:
        from .observe.admin import Admin, Standalone  # (aiohttp: imported when first asked for)

        rt = self.runtime
        admin = Admin(spec, self.control or Standalone(rt), rt.stats.admin)
        await admin.start()
        return admin

    def _finish_admin(self, plan: Plan, new: Graph, old: Admin | None) -> None:
        """The admin steps after the commit: its access rules changed in place, or the
        endpoint at the old address closed (in the background: a request in progress
        there is given its time)."""
        for step in plan.steps:
            if step.op is Op.UPDATE_ADMIN and self.admin is not None and new.admin is not None:
                self.admin.spec = new.admin
                self.admin.set_mode(new.admin.mode)
            elif step.op is Op.UNBIND_ADMIN and old is not None:
                if self.admin is old:
                    self.admin = None
                self.runtime.spawn(old.close())

    async def stop(self) -> None:
        """Stop the runtime (bounded) and close the admin endpoint, together."""
        admin, self.admin = self.admin, None
        if admin is None:
            await self.runtime.stop()
            return
        closing = asyncio.ensure_future(admin.close())
        try:
            await self.runtime.stop()
        finally:
            await asyncio.wait([closing], timeout=SHUTDOWN_TIMEOUT)
