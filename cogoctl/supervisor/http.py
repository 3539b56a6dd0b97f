"""A small asyncio HTTP/1.1 + WebSocket server for the control plane.

HTTP parsing is h11's, WebSocket framing is wsproto's; this module only moves bytes between them
and asyncio streams and calls the route handlers. Chosen over aiohttp for size: aiohttp added
~11.5 MB RSS and ~110 ms import to the daemon (docs/architecture.md has the figures).

Handlers return a `Response` (JSON or bytes), a `Stream` (an async iterator of bytes, sent
chunked: `?follow=1` answers), or a `WebSocketRoute` (the connection is upgraded and handed over).
Nothing a client sends can kill the server: protocol errors get a 4xx, handler bugs a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
import struct
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import generate_accept_token

from cogoctl.protocol import MAX_FRAME_BYTES, ErrorCode

log = logging.getLogger("cogoctl.http")
MAX_BODY = 16 * 1024 * 1024
READ_SIZE = 65536


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    peer: str = "unix"

    def json(self) -> Any:
        if not self.body:
            raise HTTPError(ErrorCode.BAD_REQUEST, "request body must be a JSON object")
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise HTTPError(ErrorCode.BAD_REQUEST, f"request body is not JSON: {exc}") from None

    def flag(self, name: str) -> bool:
        return self.query.get(name, "0").lower() in ("1", "true", "yes")

    def int_arg(self, name: str, default: int, lo: int = 0, hi: int = 1_000_000) -> int:
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise HTTPError(ErrorCode.BAD_REQUEST, f"query parameter {name} must be an integer") from None
        if not lo <= value <= hi:
            raise HTTPError(ErrorCode.BAD_REQUEST, f"query parameter {name} must be from {lo} to {hi}")
        return value


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-serialisable, or bytes with content_type
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def encode(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return (json.dumps(self.body, separators=(",", ":"), default=str) + "\n").encode()


@dataclass
class Stream:
    chunks: AsyncIterator[bytes]
    status: int = 200
    content_type: str = "application/x-ndjson"


@dataclass
class WebSocketRoute:
    handler: Callable[[WebSocket], Awaitable[None]]


class HTTPError(Exception):
    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details

    def response(self) -> Response:
        body = {"error": {"code": self.code.value, "message": str(self), "details": self.details or None}}
        return Response(self.code.http_status, body)


class WebSocketClosed(Exception):
    pass


class WebSocket:
    """A server-side WebSocket over an upgraded connection (wsproto does the framing)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trailing: bytes, request: Request):
        self.request = request
        self._reader = reader
        self._writer = writer
        self._ws = WSConnection(ConnectionType.SERVER, trailing_data=trailing)
        self._parts: list[str | bytes] = []
        self._size = 0
        self._pending: list[str | bytes] = []
        self.closed = False
        self._send_lock = asyncio.Lock()

    async def recv(self) -> str | bytes | None:
        """The next whole message, or None once the connection is closed."""
        while not self._pending:
            if self.closed:
                return None
            self._process_events()
            if self._pending or self.closed:
                continue
            try:
                data = await self._reader.read(READ_SIZE)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                self.closed = True
                return None
            self._ws.receive_data(data)
        return self._pending.pop(0)

    def _process_events(self) -> None:
        out = b""
        for event in self._ws.events():
            if isinstance(event, Message):
                self._size += len(event.data)
                if self._size > MAX_FRAME_BYTES:
                    out += self._ws.send(CloseConnection(code=1009, reason="message too big"))
                    self.closed = True
                    break
                self._parts.append(event.data)
                if event.message_finished:
                    if isinstance(event, TextMessage):
                        self._pending.append("".join(p for p in self._parts if isinstance(p, str)))
                    elif isinstance(event, BytesMessage):
                        self._pending.append(b"".join(p for p in self._parts if isinstance(p, bytes)))
                    self._parts, self._size = [], 0
            elif isinstance(event, Ping):
                out += self._ws.send(event.response())
            elif isinstance(event, CloseConnection):
                with contextlib.suppress(Exception):
                    out += self._ws.send(event.response())
                self.closed = True
        if out:
            with contextlib.suppress(Exception):
                self._writer.write(out)

    async def send(self, text: str) -> None:
        if self.closed:
            raise WebSocketClosed()
        async with self._send_lock:
            try:
                self._writer.write(self._ws.send(TextMessage(data=text)))
                await self._writer.drain()
            except (ConnectionError, OSError, RuntimeError) as exc:
                self.closed = True
                raise WebSocketClosed() from exc

    def send_nowait(self, text: str) -> None:
        """Queue a message without waiting for the peer (the transport buffers it, in order)."""
        if self.closed or self._writer.is_closing():
            self.closed = True
            raise WebSocketClosed()
        self._writer.write(self._ws.send(TextMessage(data=text)))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self._writer.write(self._ws.send(CloseConnection(code=code, reason=reason)))
            await self._writer.drain()
        with contextlib.suppress(Exception):
            self._writer.close()

    def peer_pid(self) -> int | None:
        """The connecting process's pid (SO_PEERCRED), on a unix socket."""
        sock = self._writer.get_extra_info("socket")
        if sock is None or sock.family != socket.AF_UNIX:
            return None
        try:
            pid, _uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        except OSError:
            return None
        return pid

    def abort(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self._writer.close()


Handler = Callable[[Request], Awaitable[Response | Stream | WebSocketRoute]]


class HTTPServer:
    def __init__(self, handler: Handler, token: str | None = None) -> None:
        """token: when set (the TCP listener), every request needs `Authorization: Bearer <token>`."""
        self.handler = handler
        self.token = token
        self._conns: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("connection failed")
        finally:
            self._conns.discard(task)
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def close_all(self) -> None:
        """Close every connection and let its task end by itself. (Cancelling a task that
        start_server created makes Python 3.11's StreamReaderProtocol log a CancelledError.)"""
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.close()
        if self._conns:
            _, late = await asyncio.wait(set(self._conns), timeout=2)
            for task in late:
                task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        peer = writer.get_extra_info("peername")
        peer_s = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix"
        while True:
            try:
                req = await self._read_request(conn, reader, peer_s)
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    err = HTTPError(ErrorCode.BAD_REQUEST, f"bad HTTP request: {exc}")
                    await self._send(conn, writer, err.response(), close=True)
                return
            except HTTPError as exc:
                await self._send(conn, writer, exc.response(), close=True)
                return
            if req is None:
                return
            result = await self._dispatch(req)
            if isinstance(result, WebSocketRoute):
                if not self._is_upgrade(req):
                    result = HTTPError(ErrorCode.BAD_REQUEST, "this route needs a WebSocket upgrade").response()
                else:
                    await self._upgrade(conn, reader, writer, req, result)
                    return
            if isinstance(result, Stream):
                await self._send_stream(conn, reader, writer, result)
                return  # streams end the connection (they end when the client goes)
            await self._send(conn, writer, result)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader, peer: str) -> Request | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(READ_SIZE)
                conn.receive_data(data)
                continue
            if event is h11.PAUSED:
                break
            if isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Request):
                request = event
                continue
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise HTTPError(ErrorCode.BAD_REQUEST, f"request body larger than {MAX_BODY} bytes")
                continue
            if isinstance(event, h11.EndOfMessage):
                break
        if request is None:
            return None
        target = request.target.decode("latin-1")
        parsed = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        return Request(
            request.method.decode("ascii", "replace"),
            urllib.parse.unquote(parsed.path),
            query,
            headers,
            bytes(body),
            peer,
        )

    async def _dispatch(self, req: Request) -> Response | Stream | WebSocketRoute:
        if self.token is not None:
            auth = req.headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
                return HTTPError(ErrorCode.UNAUTHORIZED, "missing or wrong bearer token").response()
        try:
            return await self.handler(req)
        except HTTPError as exc:
            return exc.response()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("handler failed for %s %s", req.method, req.path)
            return HTTPError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}").response()

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, resp: Response, close: bool = False
    ) -> None:
        body = resp.encode()
        headers = [("Content-Type", resp.content_type), ("Content-Length", str(len(body))), *resp.headers]
        if close:
            headers.append(("Connection", "close"))
        try:
            writer.write(conn.send(h11.Response(status_code=resp.status, headers=headers)))
            writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            return
        await writer.drain()

    async def _send_stream(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: Stream
    ) -> None:
        writer.write(
            conn.send(
                h11.Response(
                    status_code=stream.status,
                    headers=[("Content-Type", stream.content_type), ("Transfer-Encoding", "chunked")],
                )
            )
        )
        await writer.drain()
        closed = asyncio.create_task(_wait_eof(reader))
        try:
            async for chunk in _until(stream.chunks, closed):
                writer.write(conn.send(h11.Data(data=chunk)))
                await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        finally:
            closed.cancel()
            aclose = getattr(stream.chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    @staticmethod
    def _is_upgrade(req: Request) -> bool:
        return (
            req.method == "GET"
            and req.headers.get("upgrade", "").lower() == "websocket"
            and "sec-websocket-key" in req.headers
        )

    async def _upgrade(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        req: Request,
        route: WebSocketRoute,
    ) -> None:
        accept = generate_accept_token(req.headers["sec-websocket-key"].encode())
        writer.write(
            conn.send(
                h11.InformationalResponse(
                    status_code=101,
                    headers=[("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)],
                )
            )
        )
        await writer.drain()
        trailing, _ = conn.trailing_data
        ws = WebSocket(reader, writer, bytes(trailing), req)
        try:
            await route.handler(ws)
        finally:
            await ws.close()


async def _wait_eof(reader: asyncio.StreamReader) -> None:
    """Completes when the peer of a streaming answer goes away (it sends nothing more until then)."""
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(READ_SIZE):
            pass


async def _until(chunks: AsyncIterator[bytes], closed: asyncio.Task[None]) -> AsyncIterator[bytes]:
    iterator = chunks.__aiter__()
    while True:
        nxt = asyncio.ensure_future(iterator.__anext__())
        done, _ = await asyncio.wait({nxt, closed}, return_when=asyncio.FIRST_COMPLETED)
        if nxt in done:
            try:
                yield nxt.result()
            except StopAsyncIteration:
                return
        else:
            nxt.cancel()
            with contextlib.suppress(BaseException):
                await nxt
            return
