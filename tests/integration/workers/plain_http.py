"""A plain (non-runtime) worker: answers GET /health on $PORT; optional behaviours by env."""

import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port = int(os.environ.get("PORT", "0"))
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.environ.get("PRINT_SECRET"):
    print("my secret is", os.environ.get("API_TOKEN"), flush=True)
delay = float(os.environ.get("START_DELAY", "0"))
if delay:
    time.sleep(delay)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
print(f"listening on {server.server_address[1]}", flush=True)
print("stderr line", file=sys.stderr, flush=True)
server.serve_forever()
