"""The python-sandbox worker: python-execution (run), file-operations (write, read, list, delete),
package-install (install), on the supervisor link and on its port (3011)."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from pathlib import Path
from typing import Any

from cogoctl.worker import ErrorCode, TaskContext, TaskError, Worker
from workers.python_sandbox.policy import Limits, PolicyError, inside, safe_relative
from workers.python_sandbox.sandbox import Host, SessionsFull

worker = Worker("python-sandbox", capabilities=["python-execution", "file-operations", "package-install"])
try:
    limits = Limits.from_options(worker.settings.options)
except PolicyError as exc:
    print(f"python-sandbox: bad options: {exc}", file=sys.stderr)
    sys.exit(2)
root = Path(os.environ.get("COGO_SANDBOX_ROOT", f"/tmp/cogo-sandbox/{worker.settings.instance}"))
host = Host(limits, root, slot=int(os.environ.get("COGO_INSTANCE_INDEX", "0")))
worker.on_start.append(host.start)
worker.on_stop.append(host.close)
worker.health_checks.append(lambda: {"sandbox": host.report()})


def _source(payload: dict[str, Any]) -> tuple[str, str]:
    if isinstance(payload.get("code"), str):
        return payload["code"], "<code>"
    script = payload.get("script")
    if isinstance(script, dict) and isinstance(script.get("content"), str):
        return script["content"], str(script.get("name") or "<script>")
    raise TaskError(ErrorCode.BAD_REQUEST, "payload needs 'code' (str) or 'script' {name, content}")


def _files(payload: dict[str, Any]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, data in (payload.get("files") or {}).items():
        try:
            rel = safe_relative(name)
            out[rel] = base64.b64decode(data, validate=True)
        except (PolicyError, ValueError, TypeError) as exc:
            raise TaskError(ErrorCode.BAD_REQUEST, f"files[{name!r}]: {exc}") from None
        if len(out[rel]) > limits.file_kb * 1024:
            raise TaskError(ErrorCode.BAD_REQUEST, f"files[{name!r}] is larger than {limits.file_kb} KB")
    return out


async def _session(sid: Any, what: str) -> Any:
    if not isinstance(sid, str) or not sid:
        raise TaskError(ErrorCode.BAD_REQUEST, f"{what}: give 'session' (a non-empty string)")
    try:
        return await host.session(sid)
    except SessionsFull as exc:
        raise TaskError(ErrorCode.OVERLOADED, str(exc)) from None


def _listing(ws: Path, since: float | None = None) -> list[dict[str, Any]]:
    out = []
    for path in sorted(ws.rglob("*")):
        if ".site" in path.relative_to(ws).parts or path.is_symlink() or not path.is_file():
            continue
        st = path.stat()
        if since is None or st.st_mtime >= since - 0.01:
            out.append({"name": str(path.relative_to(ws)), "size": st.st_size})
    return out


@worker.handler("python-execution", "run")
async def run(task: TaskContext) -> dict[str, Any]:
    p = task.payload
    source, name = _source(p)
    args = [str(a) for a in p.get("args") or []]
    stdin = p.get("stdin") or ""
    if not isinstance(stdin, str):
        raise TaskError(ErrorCode.BAD_REQUEST, "stdin must be a string")
    # the run's wall clock: the task's own timeout (less a margin to answer), within the profile's
    timeout = min(limits.timeout_s, (task.timeout_s or limits.timeout_s) - 0.2)
    timeout = max(timeout, 0.1)

    async def emit(kind: str, text: str) -> None:
        await task.emit(kind, text)

    sid = p.get("session")
    if sid is not None:
        s = await _session(sid, "run")
        for rel, data in _files(p).items():
            _write(s.workspace, rel, data, s.runner.uid)
        outcome, started = await host.run_in_session(s, source, name, args, stdin, timeout, emit)
        ws = s.workspace
    else:
        outcome, ws, started = await host.run_oneshot(source, name, args, stdin, _files(p), timeout, emit)
    files = _listing(ws, started) if ws.exists() else []
    if sid is None:
        host.remove_workspace(ws)
    if outcome.killed == "timeout":
        raise TaskError(ErrorCode.TIMEOUT, f"run exceeded {timeout:g} s; its process group was killed",
                        killed="timeout", stdout_truncated=outcome.stdout_truncated)  # fmt: skip
    return {
        "exit_code": outcome.exit_code,
        "signal": outcome.signal,
        "killed": outcome.killed,
        "duration_ms": round(outcome.duration_ms, 2),
        "peak_rss_mb": outcome.peak_rss_mb,
        "stdout_truncated": outcome.stdout_truncated,
        "files": files,
        "session": sid,
    }


def _target(ws: Path, name: Any) -> Path:
    try:
        rel = safe_relative(name)
    except PolicyError as exc:
        raise TaskError(ErrorCode.BAD_REQUEST, str(exc)) from None
    path = ws / rel
    if not inside(str(ws), str(path)):
        raise TaskError(ErrorCode.BAD_REQUEST, f"{name!r}: leaves the workspace (through a symlink)")
    return path


def _write(ws: Path, rel: str, data: bytes, uid: int | None) -> None:
    path = _target(ws, rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not inside(str(ws), str(path.parent)):
        raise TaskError(ErrorCode.BAD_REQUEST, f"{rel!r}: leaves the workspace (through a symlink)")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    if uid is not None:
        os.chown(path, uid, uid)


@worker.handler("file-operations")
async def files(task: TaskContext) -> dict[str, Any]:
    p = task.payload
    s = await _session(p.get("session"), "file operations work on a session's workspace")
    s.last_used = time.monotonic()
    ws = s.workspace
    action = task.action
    if action == "list":
        return {"files": _listing(ws)}
    path = _target(ws, p.get("path"))
    if action == "write":
        try:
            data = base64.b64decode(p.get("content", ""), validate=True)
        except (ValueError, TypeError):
            raise TaskError(ErrorCode.BAD_REQUEST, "content must be base64") from None
        if len(data) > limits.file_kb * 1024:
            raise TaskError(ErrorCode.BAD_REQUEST, f"content is larger than {limits.file_kb} KB")
        _write(ws, str(path.relative_to(ws)), data, s.runner.uid)
        return {"written": str(path.relative_to(ws)), "size": len(data)}
    if action == "read":
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise TaskError(ErrorCode.NOT_FOUND, f"{p.get('path')!r} does not exist") from None
        except OSError as exc:
            raise TaskError(ErrorCode.BAD_REQUEST, f"{p.get('path')!r}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(limits.file_kb * 1024 + 1)
        if len(data) > limits.file_kb * 1024:
            raise TaskError(ErrorCode.BAD_REQUEST, f"{p.get('path')!r} is larger than {limits.file_kb} KB")
        return {"path": str(path.relative_to(ws)), "content": base64.b64encode(data).decode(), "size": len(data)}
    if action == "delete":
        try:
            if path.is_dir() and not path.is_symlink():
                raise TaskError(ErrorCode.BAD_REQUEST, "delete removes files, not directories")
            path.unlink()
        except FileNotFoundError:
            raise TaskError(ErrorCode.NOT_FOUND, f"{p.get('path')!r} does not exist") from None
        return {"deleted": str(path.relative_to(ws))}
    raise TaskError(ErrorCode.UNSUPPORTED, f"file-operations has write, read, list, delete; not {action!r}")


@worker.handler("package-install", "install")
async def install(task: TaskContext) -> dict[str, Any]:
    p = task.payload
    sid = p.get("session")
    packages = p.get("packages")
    if not isinstance(sid, str) or not sid:
        raise TaskError(ErrorCode.BAD_REQUEST, "packages go into a session's environment: give 'session'")
    if not isinstance(packages, list) or not packages or not all(isinstance(x, str) for x in packages):
        raise TaskError(ErrorCode.BAD_REQUEST, "packages must be a non-empty list of names")
    for name in packages:
        why = limits.package_allowed(name)
        if why:
            raise TaskError(ErrorCode.UNSUPPORTED if "off" in why else ErrorCode.BAD_REQUEST, why)
    s = await _session(sid, "packages go into a session's environment")
    target = s.workspace / ".site"
    # pip runs here, with network (this step only), into the session's own directory
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "--target", str(target),
        *packages, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limits.timeout_s * 10)
    except TimeoutError:
        proc.kill()
        raise TaskError(ErrorCode.TIMEOUT, "pip install took too long") from None
    await task.emit("log", out.decode(errors="replace")[-4000:])
    if proc.returncode != 0:
        raise TaskError(ErrorCode.BAD_REQUEST, f"pip install failed (exit {proc.returncode})")
    if s.runner.uid is not None:
        for path in [target, *target.rglob("*")]:
            os.lchown(path, s.runner.uid, s.runner.uid)
    return {"installed": packages, "session": sid}


async def _pidfd_child_watcher() -> None:
    """Watch our own children with pidfds: no thread per child (forking with preexec_fn and
    threads do not mix, and waitpid(-1) elsewhere would steal exit codes)."""
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)


def main() -> None:
    worker.on_start.insert(0, _pidfd_child_watcher)
    worker.run()


if __name__ == "__main__":
    main()
