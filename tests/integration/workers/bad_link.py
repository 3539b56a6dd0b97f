"""Speaks the link protocol badly on purpose. MODE=malformed: valid hello, then garbage.
MODE=version: hello with protocol 99. Writes what the supervisor did to $OUT."""

import asyncio
import json
import os

from websockets.asyncio.client import unix_connect
from websockets.exceptions import ConnectionClosed


async def main() -> None:
    mode = os.environ["MODE"]
    out = os.environ["OUT"]
    hello = {"type": "hello", "protocol": 99 if mode == "version" else 1, "worker": os.environ["COGO_WORKER"],
             "instance": os.environ["COGO_INSTANCE"], "pid": os.getpid(), "port": None, "capabilities": [],
             "token": os.environ["COGO_LINK_TOKEN"]}  # fmt: skip
    async with unix_connect(os.environ["COGO_SOCKET"], uri="ws://localhost/api/link", ping_interval=None) as ws:
        await ws.send(json.dumps(hello))
        first = json.loads(await ws.recv())
        if mode == "version":
            with open(out, "w") as fh:
                json.dump(first, fh)
            raise SystemExit(2)
        await ws.send("{this is not json")
        try:
            reply = await asyncio.wait_for(ws.recv(), 5)
            await asyncio.wait_for(ws.recv(), 5)
            result = {"closed": False, "reply": reply}
        except ConnectionClosed as exc:
            result = {"closed": True, "code": exc.rcvd.code if exc.rcvd else None}
    with open(out, "w") as fh:
        json.dump(result, fh)
    await asyncio.sleep(3600)


asyncio.run(main())
