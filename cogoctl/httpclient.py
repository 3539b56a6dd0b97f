"""HTTP/1.1 client requests on loopback or a Unix socket: /health probes, webhook hooks, the bridge's
look-ups (h11 for HTTP, asyncio for I/O)."""

from __future__ import annotations

import asyncio
import time

import h11


class ProbeError(Exception):
    pass


async def http_get(
    host: str, port: int, path: str, timeout: float, headers: list[tuple[str, str]] | None = None
) -> tuple[int, bytes, float]:
    """Return (status, body, elapsed_ms). Raises ProbeError on connect/timeout/protocol failure."""
    return await http_request("GET", host, port, path, timeout, headers)


async def http_request(
    method: str,
    host: str,
    port: int,
    path: str,
    timeout: float,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    unix: str | None = None,
) -> tuple[int, bytes, float]:
    """An HTTP/1.1 request to host:port, or over the Unix socket `unix`."""
    start = time.perf_counter()
    try:
        return await asyncio.wait_for(_request(method, host, port, path, headers or [], body, start, unix), timeout)
    except TimeoutError:
        raise ProbeError(f"timed out after {timeout:g}s") from None
    except OSError as exc:
        raise ProbeError(exc.strerror or str(exc)) from None
    except h11.ProtocolError as exc:
        raise ProbeError(f"bad HTTP answer: {exc}") from None


async def _request(
    method: str,
    host: str,
    port: int,
    path: str,
    headers: list[tuple[str, str]],
    body_out: bytes,
    start: float,
    unix: str | None,
) -> tuple[int, bytes, float]:
    if unix is not None:
        reader, writer = await asyncio.open_unix_connection(unix)
    else:
        reader, writer = await asyncio.open_connection(host, port)
    try:
        conn = h11.Connection(h11.CLIENT)
        base = [("Host", f"{host}:{port}"), ("Connection", "close")]
        if body_out or method != "GET":
            base.append(("Content-Length", str(len(body_out))))
        req = h11.Request(method=method, target=path, headers=[*base, *headers])
        out = conn.send(req)
        if body_out:
            out += conn.send(h11.Data(data=body_out))
        writer.write(out + conn.send(h11.EndOfMessage()))
        status = 0
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > 1024 * 1024:
                    raise ProbeError("answer larger than 1 MiB")
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        return status, bytes(body), (time.perf_counter() - start) * 1000
    finally:
        writer.close()
