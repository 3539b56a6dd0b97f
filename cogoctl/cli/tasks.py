"""`exec` (hand a task to the balancer and stream its output) and `scale`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cogoctl.cli.app import ProfileOpt
from cogoctl.cli.common import client_for
from cogoctl.errors import ApiError, ExitCode, UsageError
from cogoctl.protocol import ErrorCode, exit_status


def register(app: typer.Typer) -> None:
    app.command(
        name="exec",
        help="Run a task on a worker: a script FILE (read here, sent as content), -c CODE, or --task task.json. "
        "Streams stdout/stderr and exits with the task's exit code (124 timeout, 125 could not run).",
        context_settings={"ignore_unknown_options": True},
    )(exec_)
    app.command(help="Set a worker's number of instances (new ones RUNNING, surplus drained and stopped).")(scale)


def build_request(
    worker: str, file: str | None, args: list[str], code: str | None, task_file: Path | None, stdin: str | None
) -> dict[str, Any]:
    if sum(x is not None for x in (file, code, task_file)) != 1:
        raise UsageError("give exactly one of FILE, -c CODE or --task task.json")
    if task_file is not None:
        try:
            task = json.loads(task_file.read_text())
        except OSError as exc:
            raise UsageError(f"--task {task_file}: {exc.strerror}") from None
        except ValueError as exc:
            raise UsageError(f"--task {task_file}: not JSON ({exc})") from None
        if not isinstance(task, dict) or not isinstance(task.get("action"), str):
            raise UsageError(f"--task {task_file}: expected an object with 'action' (and 'payload', 'capability')")
        task.setdefault("payload", {})
    else:
        payload: dict[str, Any] = {"args": args}
        if code is not None:
            payload["code"] = code
        else:
            assert file is not None
            try:
                payload["script"] = {"name": Path(file).name, "content": Path(file).read_text()}
            except OSError as exc:
                raise UsageError(f"{file}: {exc.strerror}; give the path of a script to run") from None
            except UnicodeDecodeError:
                raise UsageError(f"{file}: not a text file") from None
        if stdin is not None:
            payload["stdin"] = stdin
        task = {"action": "run", "payload": payload}
    request: dict[str, Any] = {"workerType": worker, "task": task}
    if "capability" in task:
        request["capability"] = task["capability"]
    return request


def exec_(
    worker: Annotated[str, typer.Argument(help="The worker type (e.g. python-sandbox).")],
    file: Annotated[str | None, typer.Argument(help="A script to run (read on this side).")] = None,
    args: Annotated[list[str] | None, typer.Argument(help="Arguments for the script.")] = None,
    code: Annotated[str | None, typer.Option("-c", "--code", help="Code to run instead of a file.")] = None,
    task_file: Annotated[
        Path | None, typer.Option("--task", help="A JSON task: {capability, action, payload}.")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds before the task is cancelled (exit 124).")
    ] = 300.0,
    priority: Annotated[str, typer.Option("--priority", help="high, normal or low.")] = "normal",
    idempotent: Annotated[
        bool, typer.Option("--idempotent", help="May be retried once on another instance if its instance dies.")
    ] = False,
    send_stdin: Annotated[
        bool, typer.Option("--stdin", help="Send this command's standard input to the task.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final answer as JSON instead of streaming output.")
    ] = False,
    profile: ProfileOpt = "dev",
) -> None:
    if priority not in ("high", "normal", "low"):
        raise UsageError("--priority must be high, normal or low")
    if code is not None and file is not None:  # `exec W -c CODE a b`: the positionals are arguments
        args = [file, *(args or [])]
        file = None
    request = build_request(worker, file, list(args or []), code, task_file, sys.stdin.read() if send_stdin else None)
    request.update({"priority": priority, "timeout_s": timeout, "idempotent": idempotent})
    client = client_for(profile, timeout=None)
    final: dict[str, Any] | None = None
    events: list[dict[str, Any]] = []
    try:
        for frame in client.stream("POST", "/api/workers/execute?stream=1", request):
            kind = frame.get("type")
            if kind == "event":
                if as_json:
                    events.append({"event": frame["event"], "data": frame.get("data")})
                else:
                    _print_event(frame)
            elif kind in ("result", "error"):
                final = frame
                break
    except ApiError as exc:  # refused before it started (bad request, overloaded, unknown worker)
        code_ = _code(exc.code)
        print(f"cogoctl: {code_.value}: {exc}", file=sys.stderr)
        raise typer.Exit(code_.exec_exit_code) from None
    except KeyboardInterrupt:
        print("cogoctl: cancelled", file=sys.stderr)
        raise typer.Exit(130) from None
    if final is None:
        print("cogoctl: WORKER_LOST: the supervisor ended the stream without an answer", file=sys.stderr)
        raise typer.Exit(ErrorCode.WORKER_LOST.exec_exit_code)
    if as_json:
        print(json.dumps({**final, "events": events}, indent=2))
    if final["type"] == "error":
        if not as_json:
            print(f"cogoctl: {final['code']}: {final['message']}", file=sys.stderr)
        raise typer.Exit(ErrorCode(final["code"]).exec_exit_code)
    raise typer.Exit(exit_status(final.get("payload")))


def _code(value: str) -> ErrorCode:
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.INTERNAL


def _print_event(frame: dict[str, Any]) -> None:
    data = frame.get("data")
    text = data if isinstance(data, str) else json.dumps(data)
    stream = sys.stdout if frame["event"] == "stdout" else sys.stderr
    if frame["event"] not in ("stdout", "stderr"):
        text = f"[{frame['event']}] {text}\n"
    stream.write(text)
    stream.flush()


def scale(
    name: Annotated[str, typer.Argument(help="A worker name.")],
    instances: Annotated[int, typer.Argument(help="How many instances it should have.")],
    profile: ProfileOpt = "dev",
) -> None:
    from urllib.parse import quote

    from cogoctl.cli.render import print_status

    data = client_for(profile, timeout=None).post(
        f"/api/workers/{quote(name, safe='')}/scale", {"instances": instances}, ok=(200, 409)
    )
    print_status(data["instances"])
    if not data["ok"]:
        print(f"cogoctl: scale {name} {instances}: not every new instance became RUNNING", file=sys.stderr)
        raise typer.Exit(ExitCode.FAILED)
