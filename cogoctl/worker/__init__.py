"""The runtime every worker shares: link to the supervisor, heartbeats, public WebSocket port with
GET /health, task dispatch by capability, cancellation, graceful drain.

    from cogoctl.worker import Worker, TaskContext

    worker = Worker("echo", capabilities=["echo"])

    @worker.handler("echo")
    async def echo(task: TaskContext) -> dict:
        await task.emit("log", "echoing")
        return {"echo": task.payload}

    worker.run()

Never imports the supervisor.
"""

from cogoctl.protocol import ErrorCode
from cogoctl.worker.runtime import Worker
from cogoctl.worker.tasks import TaskContext, TaskError

__all__ = ["ErrorCode", "TaskContext", "TaskError", "Worker"]
