"""A runtime worker whose one action does nothing: measures cogoctl's own overhead."""

from cogoctl.worker import TaskContext, Worker

worker = Worker("noop", capabilities=["noop"])


@worker.handler("noop")
async def noop(task: TaskContext) -> dict:
    return {}


worker.run()
