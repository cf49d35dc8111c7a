"""The Unix endpoint kind: one socket file per endpoint, in the 1.x length-prefixed
framing or as newline-delimited lines. A client is an ``asyncio.Protocol``: frames are
read as they arrive, no task per client."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import stat
import struct
from collections.abc import Sequence
from typing import Any

from ..config.access import UnixAccess
from ..config.model import EndpointSpec
from ..config.unixspec import UnixListen
from ..report import plural
from .budget import Budget
from .clients import CLOSE_GRACE, ClientEndpoint, release
from .endpoints import BACKLOG, ClientState, StartupError, os_reason, set_send_buffer
from .frames import valid_utf8
from .kinds import RuntimeKind
from .stats import EndpointStats
from .wire import LINES, WIRES, FrameError, LengthPrefixedDecoder, LineDecoder

log = logging.getLogger("veylor.endpoint")


class UnixClient(ClientState, asyncio.Protocol):
    """A client of a Unix endpoint: reads frames as they arrive, no task per client."""

    endpoint: UnixEndpoint
    decoder: LineDecoder | LengthPrefixedDecoder
    uid = gid = -1  # the peer's, from SO_PEERCRED

    def __init__(self, acceptor: _Acceptor, number: int) -> None:
        self.acceptor = acceptor
        self.transport: Any = None  # asyncio's or uvloop's transport, once connected
        self.closing = False
        self.label = f"unix#{number}"

    def connection_made(self, transport: Any) -> None:
        self.transport = transport  # (uvloop's transports are not asyncio's classes)
        # The endpoint the listener serves now: a reload may have attached a new one
        # since this connection was accepted (the old one is retired, its clients closed).
        ep = self.endpoint = self.acceptor.endpoint
        size = ep.spec.max_message_size
        self.decoder = LineDecoder(size) if ep.wire is LINES else LengthPrefixedDecoder(size)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                pid, uid, gid = struct.unpack(
                    "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
                )
                self.label += f" (pid {pid}, uid {uid})"
                self.uid, self.gid = uid, gid
            except OSError:  # pragma: no cover - not Linux
                pass
        access: UnixAccess = ep.spec.access
        if not access.admits(self.uid, self.gid):
            self.closing = True
            ep.refused("refused_peer", self.label, f"uid {self.uid} and gid {self.gid} are not allowed")
            transport.abort()
            return
        if not ep.admits(self.label):
            self.closing = True
            transport.close()
            return
        ep.add(self)
        ep.stats.accepted += 1
        self.sndbuf = set_send_buffer(transport, ep.spec.socket_buffer)
        log.info(
            "endpoint %s: client %s connected (%s)", ep.name, self.label, plural(len(ep.clients), "client")
        )
        ep.joined(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        ep = self.endpoint
        lines = isinstance(self.decoder, LineDecoder)
        try:
            for payload in self.decoder.feed(data):
                if lines:
                    if not valid_utf8(payload):
                        # A line is text; one that is not UTF-8 would make the upstream
                        # close the shared connection (1007) if sent as text.
                        ep.invalid_text(self.label)
                        self.close()
                        return
                    ep.from_client(self, payload, True)
                else:
                    # 1.x framing has no frame type: valid UTF-8 goes upstream as text.
                    ep.from_client(self, payload, valid_utf8(payload))
                if self.closing:  # (closed for its upstream rate)
                    return
        except FrameError as exc:
            ep.malformed(self.label, exc)
            self.close()

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        release(self, not self.closing)  # what Veylor held meanwhile (ClientEndpoint.hold)

    def connection_lost(self, exc: Exception | None) -> None:
        release(self, write=False)
        ep = self.endpoint
        if self in ep.clients:
            level = ep.departure_level()  # (before the last one's removal ends the one-line mode)
            ep.remove(self)
            log.log(
                level,
                "endpoint %s: client %s disconnected (%s%s)",
                ep.name,
                self.label,
                plural(len(ep.clients), "client"),
                ep.departed(self),
            )

    def close(self, grace: float = CLOSE_GRACE) -> None:
        if self.closing or self.transport is None:
            return
        self.closing = True
        release(self)
        self.transport.close()  # flushes what is buffered, then closes
        asyncio.get_running_loop().call_later(grace, self.transport.abort)


def _listen(spec: EndpointSpec) -> UnixListen:
    """A Unix endpoint's listen settings (a spec of another kind is a bug: TypeError)."""
    if not isinstance(spec.listen, UnixListen):
        raise TypeError(f"endpoint {spec.name}: not a Unix endpoint")
    return spec.listen


class UnixEndpoint(ClientEndpoint[UnixClient]):
    """A Unix domain socket endpoint; its :class:`UnixListener` owns the socket file."""

    def __init__(
        self, spec: EndpointSpec, stats: EndpointStats | None = None, budget: Budget | None = None
    ) -> None:
        super().__init__(spec, stats, budget)
        self.wire = WIRES[_listen(spec).framing]

    @property
    def path(self) -> str:
        return _listen(self.spec).path

    @staticmethod
    def is_open(client: UnixClient) -> bool:
        return not client.closing

    def abort(self, client: UnixClient) -> None:
        client.closing = True  # connection_lost comes later: never count or write it again
        release(client, write=False)
        client.transport.abort()

    def disconnect_slow(self, client: UnixClient) -> None:
        self.abort(client)  # no close message in these framings; what is buffered would never leave

    def close_client(self, client: UnixClient, code: int, reason: str) -> None:
        client.close()

    def update(self, spec: EndpointSpec) -> None:
        """New settings; with new ``allowed_uids``/``allowed_gids``, the clients they no
        longer admit are closed."""
        old = self.spec.access
        super().update(spec)
        access: UnixAccess = spec.access
        if access == old:
            return
        gone = [c for c in self.clients if not c.closing and not access.admits(c.uid, c.gid)]
        for client in gone:
            client.close()
        if gone:
            self.stats.revoked += len(gone)
            log.warning(
                "endpoint %s: closed %d clients whose uid and gid are no longer allowed", self.name, len(gone)
            )

    def close_clients(self, code: int, reason: str) -> None:
        self.closing_every_client(code, reason)
        for client in list(self.clients):
            client.close()


class SocketFile:
    """A Unix socket file Veylor makes and owns (an endpoint's, the admin endpoint's).

    It is bound with its final mode (no window with a wider one), after a stale file of
    a dead process is cleared (anything else at the path is refused), then given its
    owner and group (after its mode: see :meth:`chmod`); its mode is changed,
    and the file removed, only while the file at the path is still the one made: never
    through a link, never one put there since.
    """

    def __init__(self, path: str, owner: str) -> None:
        self.path = path
        self.owner = owner  # who, in errors and log lines: "endpoint ipc", "admin"
        self.bound: tuple[int, int] | None = None  # (st_dev, st_ino) of the file made

    async def bind(self, mode: int, ids: tuple[int, int] = (-1, -1)) -> socket.socket:
        """A socket bound at the path (not yet listening); :class:`StartupError` naming
        the owner and the path if it cannot be."""
        path = self.path
        where = f"{self.owner}: cannot listen on unix:{path}"
        await _clear_stale_socket(path, where)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o777 & ~mode)  # the file is created with its final mode: no window
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.ENOENT:
                raise StartupError(
                    f"{where}: directory {os.path.dirname(path) or '.'} does not exist "
                    "(create it; under systemd, RuntimeDirectory=veylor makes /run/veylor)"
                ) from None
            raise StartupError(f"{where}: {os_reason(exc)}") from None
        finally:
            os.umask(old_umask)
        try:
            os.chmod(path, mode)
            if ids != (-1, -1):
                try:
                    os.chown(path, *ids)
                except PermissionError:
                    os.unlink(path)
                    raise StartupError(
                        f"{where}: cannot give the socket file owner/group {ids[0]}:{ids[1]}: permission "
                        "denied (Veylor needs root or CAP_CHOWN for owner; for group, membership of it)"
                    ) from None
            st = os.stat(path)
        except OSError as exc:
            sock.close()
            raise StartupError(f"{where}: {os_reason(exc)}") from None
        except StartupError:
            sock.close()
            raise
        self.bound = (st.st_dev, st.st_ino)
        return sock

    def _ours(self) -> bool:
        st = os.lstat(self.path)
        return stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self.bound

    def chmod(self, mode: int, ids: tuple[int, int] = (-1, -1)) -> None:
        """A new mode, owner and group. The mode first: once the file is another user's,
        only CAP_FOWNER may change its mode, and a service given CAP_CHOWN alone (for
        ``owner``) has not. A file given away before is taken back for that (CAP_CHOWN)."""
        try:
            if self._ours():
                if os.stat(self.path).st_uid != os.geteuid():
                    os.chown(self.path, os.geteuid(), -1)
                os.chmod(self.path, mode)
                if ids != (-1, -1):
                    os.chown(self.path, *ids)
                return
            why = "it is not the socket Veylor made any more"
        except OSError as exc:
            why = exc.strerror or str(exc)
        log.warning("%s: mode %04o not applied to unix:%s: %s", self.owner, mode, self.path, why)

    def remove(self) -> None:
        if self.bound is None:
            return
        try:
            if self._ours():
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("%s: could not remove the socket file %s: %s", self.owner, self.path, exc)
        self.bound = None


class UnixListener:
    """A listening Unix socket for one endpoint. A reload that changes the endpoint's
    framing or mode attaches the new endpoint here: the socket stays bound, new
    connections come to the new endpoint, and the file takes the new mode."""

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key
        self.path = key[1]
        self.server: asyncio.AbstractServer | None = None
        self.file: SocketFile | None = None  # once bound
        self._acceptor: _Acceptor | None = None
        self._mode: int | None = None
        self._ids = (-1, -1)

    def describe(self) -> str:
        ep = self._acceptor.endpoint if self._acceptor is not None else None
        return f"unix:{self.path} for {ep.name} ({ep.wire.name})" if ep is not None else f"unix:{self.path}"

    def attach(self, endpoints: Sequence[UnixEndpoint]) -> None:
        (ep,) = endpoints  # one endpoint per path (the loader checks)
        if self._acceptor is None:
            self._acceptor = _Acceptor(ep)
        self._acceptor.endpoint = ep
        listen = _listen(ep.spec)
        mode, ids = listen.mode, listen.ids
        if self.file is not None and (mode, ids) != (self._mode, self._ids):
            self.file.chmod(mode, ids)
        self._mode, self._ids = mode, ids

    async def start(self) -> None:
        if self._acceptor is None or self._mode is None:
            raise RuntimeError(f"listener unix:{self.path}: attach before start")
        file = SocketFile(self.path, f"endpoint {self._acceptor.endpoint.name}")
        sock = await file.bind(self._mode, self._ids)
        try:
            loop = asyncio.get_running_loop()
            self.server = await loop.create_unix_server(self._acceptor, sock=sock, backlog=BACKLOG)
        except OSError as exc:
            sock.close()
            file.remove()
            raise StartupError(f"{file.owner}: cannot listen on unix:{self.path}: {os_reason(exc)}") from None
        self.file = file

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def close(self) -> None:
        """Stop accepting and remove the socket file (if it is still the one this listener
        made): the path serves nothing any more. Connected clients are not affected."""
        self.stop_accepting()
        if self.file is not None:
            self.file.remove()


class _Acceptor:
    """The protocol factory of a Unix listener; a reload may point it at a new endpoint."""

    def __init__(self, endpoint: UnixEndpoint) -> None:
        self.endpoint = endpoint
        self.numbers = 0

    def __call__(self) -> UnixClient:
        self.numbers += 1
        return UnixClient(self, self.numbers)


async def _clear_stale_socket(path: str, where: str) -> None:
    """Remove a socket file left by a dead process; refuse anything else at ``path``.
    The probe does not block the event loop (a live listener with a full backlog would
    keep a blocking connect waiting)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(f"{where}: {path} exists and is not a socket (it was left untouched)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        async with asyncio.timeout(0.5):
            await asyncio.get_running_loop().sock_connect(probe, path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # nobody listens: stale
        log.info("removed stale socket file %s", path)
        return
    except TimeoutError:
        pass  # someone listens, too busy to accept: not stale
    except OSError as exc:
        raise StartupError(f"{where}: {path} exists and cannot be checked: {os_reason(exc)}") from None
    finally:
        probe.close()
    raise StartupError(f"{where}: another process is listening on {path}")


KIND = RuntimeKind(endpoint=UnixEndpoint, listener=UnixListener)
