"""A plain TCP worker on $PORT. MODE=echo (default): echo, and half-close back after the client's
EOF. MODE=pid: first send "<pid>\\n", then echo. MODE=halfclose: send b"HELLO", shut down our
write side, then append everything received to $OUT."""

import os
import socket
import threading

port = int(os.environ["PORT"])
mode = os.environ.get("MODE", "echo")
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(512)
print(f"{mode} on {port}", flush=True)


def serve(conn: socket.socket) -> None:
    with conn:
        if mode == "pid":
            conn.sendall(f"{os.getpid()}\n".encode())
        if mode == "halfclose":
            conn.sendall(b"HELLO")
            conn.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := conn.recv(65536):
                got += chunk
            with open(os.environ["OUT"], "ab") as fh:
                fh.write(got + b"\n")
            return
        while chunk := conn.recv(65536):
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)


while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
