"""Control-plane client: HTTP over the supervisor's Unix socket, standard library only.

Kept light on purpose: `cogoctl status` imports this, never the daemon, Playwright or a server.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

from cogoctl.errors import ApiError, NoSupervisorError


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    def __init__(self, socket_path: str, timeout: float | None = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _conn(self, timeout: float | None) -> _UnixConnection:
        return _UnixConnection(self.socket_path, timeout)

    def _request(
        self, method: str, path: str, body: Any = None, timeout: float | None = None
    ) -> http.client.HTTPResponse:
        conn = self._conn(self.timeout if timeout is None else timeout)
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            conn.request(method, path, body=payload, headers=headers)
            return conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError):
            raise NoSupervisorError(
                f"no supervisor is running (no answer on {self.socket_path}); start one with `cogoctl up`"
            ) from None
        except TimeoutError:
            raise ApiError("TIMEOUT", f"the supervisor did not answer {method} {path} in time") from None

    def call(
        self, method: str, path: str, body: Any = None, timeout: float | None = None, ok: tuple[int, ...] = (200,)
    ) -> Any:
        resp = self._request(method, path, body, timeout)
        data = resp.read()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        if resp.status not in ok:
            err = (parsed or {}).get("error") if isinstance(parsed, dict) else None
            if err:
                raise ApiError(err.get("code", "INTERNAL"), err.get("message", ""), resp.status)
            raise ApiError("INTERNAL", f"HTTP {resp.status} from {method} {path}", resp.status)
        return parsed

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, body, **kw)

    def stream(self, method: str, path: str, body: Any = None) -> Iterator[dict[str, Any]]:
        """NDJSON lines of a chunked answer (`?follow=1`), until the server ends it."""
        resp = self._request(method, path, body, timeout=None)
        if resp.status != 200:
            data = resp.read()
            try:
                err = json.loads(data)["error"]
            except (ValueError, KeyError, TypeError):
                raise ApiError("INTERNAL", f"HTTP {resp.status} from {method} {path}", resp.status) from None
            raise ApiError(err.get("code", "INTERNAL"), err.get("message", ""), resp.status)
        try:
            while True:
                line = resp.readline()
                if not line:
                    return
                line = line.strip()
                if line:
                    yield json.loads(line)
        finally:
            resp.close()
