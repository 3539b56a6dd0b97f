"""The benchmarks' tiny worker: answers GET /health on $PORT (stdlib only, starts fast)."""

import os
import socket

port = int(os.environ["PORT"])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(64)
body = b'{"status": "ok"}'
resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
    len(body),
    body,
)
while True:
    conn, _ = srv.accept()
    try:
        conn.recv(4096)
        conn.sendall(resp)
    finally:
        conn.close()
