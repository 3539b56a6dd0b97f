"""A worker built on cogoctl.worker, with actions that let tests make it misbehave."""

import asyncio
import os
import signal
import time

from cogoctl.worker import ErrorCode, TaskContext, TaskError, Worker

worker = Worker("rt", capabilities=["test"])
state: dict = {"health": 200, "hog": []}


def block_forever(*_):
    time.sleep(3600)  # inside the event loop's thread: the loop stops, and so do heartbeats


signal.signal(signal.SIGUSR1, block_forever)


@worker.handler("test", "echo")
async def echo(task: TaskContext):
    return {"echo": task.payload, "instance": worker.settings.instance, "pid": os.getpid()}


@worker.handler("test", "sleep")
async def sleep(task: TaskContext):
    await asyncio.sleep(float(task.payload.get("s", 1)))
    return {"slept": task.payload.get("s", 1), "instance": worker.settings.instance}


@worker.handler("test", "emit")
async def emit(task: TaskContext):
    for i in range(int(task.payload.get("n", 3))):
        await task.emit("stdout", f"line {i}\n")
    return {"exit_code": int(task.payload.get("exit_code", 0))}


@worker.handler("test", "run")
async def run(task: TaskContext):
    """What `cogoctl exec rt -c TEXT ARGS` sends: prints TEXT (or the script's content), exits with
    the code given as `exit=N` in the args, sleeps `sleep=S` first."""
    text = task.payload.get("code") or task.payload.get("script", {}).get("content", "")
    code = 0
    for arg in task.payload.get("args", []):
        if arg.startswith("exit="):
            code = int(arg[5:])
        if arg.startswith("sleep="):
            await asyncio.sleep(float(arg[6:]))
    await task.emit("stdout", text + "\n")
    await task.emit("stderr", f"from {worker.settings.instance}\n")
    return {"exit_code": code, "instance": worker.settings.instance}


@worker.handler("test", "fail")
async def fail(task: TaskContext):
    raise TaskError(ErrorCode.BAD_REQUEST, "asked to fail")


@worker.handler("test", "set_health")
async def set_health(task: TaskContext):
    state["health"] = int(task.payload["status"])
    return {"health": state["health"]}


@worker.handler("test", "hog")
async def hog(task: TaskContext):
    state["hog"].append(b"x" * (int(task.payload["mb"]) * 1024 * 1024))
    return {"held_mb": sum(len(b) for b in state["hog"]) // 1048576}


@worker.handler("test", "block")
async def block(task: TaskContext):
    block_forever()


worker.health_checks.append(
    lambda: None if state["health"] == 200 else {"status": "failing", "http_status": state["health"]}
)

if os.environ.get("HOG_MB"):
    state["hog"].append(b"x" * (int(os.environ["HOG_MB"]) * 1024 * 1024))

worker.run()
