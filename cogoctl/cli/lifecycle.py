"""`cogoctl up` and `cogoctl down`: starting and stopping the supervisor itself."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cogoctl import paths
from cogoctl.cli.app import ProfileOpt
from cogoctl.cli.common import client_for, client_for_state, err, state_dir_for
from cogoctl.errors import AlreadyRunningError, ExitCode, NoSupervisorError, StartFailedError


def register(app: typer.Typer) -> None:
    app.command(help="Start the supervisor and its workers (foreground with a live view, or -d).")(up)
    app.command(help="Stop every worker (reverse start order) and the supervisor.")(down)
    app.command(help="Re-read the profile and apply what changed: start, stop, restart or scale only those workers.")(
        reload
    )


def _lock_free(state_dir: Path) -> bool:
    """True when no supervisor holds this state dir's lock."""
    try:
        fd = os.open(state_dir / paths.LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _running_pid(state_dir: Path) -> str:
    try:
        return (state_dir / paths.PID_NAME).read_text().strip()
    except OSError:
        return "?"


def _spawn_daemon(
    profile_path: str, state_dir: Path, detach: bool, watch: bool | None
) -> tuple[subprocess.Popen[bytes], int]:
    r, w = os.pipe()
    argv = [
        sys.executable, "-m", "cogoctl.supervisor.daemon",
        "--profile", profile_path, "--state-dir", str(state_dir), "--ready-fd", str(w),
    ]  # fmt: skip
    if detach:
        argv.append("--fail-fast")
    if watch is not None:
        argv.append("--watch" if watch else "--no-watch")
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    out = open(state_dir / "supervisor.out", "ab")  # tracebacks of a crashing supervisor land here

    def child_setup() -> None:
        if not detach:  # foreground: the supervisor goes when this CLI goes, even on SIGKILL
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)

    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            pass_fds=(w,),
            start_new_session=True,
            preexec_fn=child_setup,
            close_fds=True,
        )
    finally:
        os.close(w)
        out.close()
    return proc, r


def _read_report(fd: int) -> dict[str, Any] | None:
    buf = b""
    with os.fdopen(fd, "rb") as fh:
        buf = fh.readline()
    if not buf:
        return None
    try:
        return json.loads(buf)
    except ValueError:
        return None


def _failure_text(report: dict[str, Any], state_dir: Path) -> str:
    if "error" in report:
        return str(report["error"])
    lines = [
        f"worker {report['worker']} ({report['instance']}) could not start: {report['reason']}"
        + (f" [last {report['exit']}]" if report.get("exit") and report["exit"] not in report["reason"] else "")
    ]
    tail = report.get("log_tail") or []
    if tail:
        lines.append(f"last log lines of {report['instance']}:")
        lines += [f"  {line}" for line in tail]
    else:
        lines.append(f"(no output; log: {state_dir / 'logs' / (report['instance'] + '.log')})")
    return "\n".join(lines)


def _supervisor_out_tail(state_dir: Path) -> str:
    try:
        text = (state_dir / "supervisor.out").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-5:])


def up(
    profile: ProfileOpt = "dev",
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Run in the background; return once all are RUNNING.")
    ] = False,
    watch: Annotated[
        bool | None,
        typer.Option(
            "--watch/--no-watch", help="Restart workers when their `watch` paths change (default: manager.watch)."
        ),
    ] = None,
) -> None:
    from cogoctl.profile import resolve_profile_path

    # the supervisor parses the profile (once); a bad one is reported through the ready pipe with
    # exit code 2 before anything starts
    profile_path = str(resolve_profile_path(profile))
    sd = state_dir_for(profile)
    if not _lock_free(sd):
        raise AlreadyRunningError(
            f"a supervisor (pid {_running_pid(sd)}) is already running for state dir {sd}; "
            "use `cogoctl status`, or `cogoctl down` first"
        )
    proc, ready_r = _spawn_daemon(profile_path, sd, detach, watch)
    if detach:
        _up_detached(proc, ready_r, sd)
    else:
        _up_foreground(proc, ready_r, sd, profile)


def _up_detached(proc: subprocess.Popen[bytes], ready_r: int, sd: Path) -> None:
    report = _read_report(ready_r)
    if report is None:
        proc.wait()
        tail = _supervisor_out_tail(sd)
        raise StartFailedError(
            f"the supervisor exited during start (code {proc.returncode})" + (f":\n{tail}" if tail else "")
        )
    if not report.get("ok"):
        proc.wait()  # it stops everything it started before exiting (fail-fast)
        exc = StartFailedError(_failure_text(report, sd))
        if "code" in report:
            exc.exit_code = ExitCode(report["code"]) if report["code"] in iter(ExitCode) else ExitCode.FAILED
        raise exc
    from cogoctl.cli.table import status_text

    tty = sys.stdout.isatty()
    print(status_text(report["workers"], colour=tty))  # the snapshot taken when all were RUNNING
    print(f"supervisor pid {report['pid']} running; socket {report['socket']}")


def _up_foreground(proc: subprocess.Popen[bytes], ready_r: int, sd: Path, profile: str) -> None:
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from cogoctl.cli.render import console as render_console
    from cogoctl.cli.table import status_text

    console = render_console()
    stopping: list[str] = []

    def forward(signum: int, _frame: object) -> None:
        if not stopping:
            stopping.append(signal.Signals(signum).name)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    os.set_blocking(ready_r, False)
    report: dict[str, Any] | None = None
    buf = b""
    client = None
    notice = Text("starting…", style="cyan")
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while proc.poll() is None:
            if report is None and ready_r >= 0:
                with contextlib.suppress(BlockingIOError):
                    chunk = os.read(ready_r, 65536)
                    if chunk:
                        buf += chunk
                    else:
                        os.close(ready_r)
                        ready_r = -1
                if b"\n" in buf:
                    report = json.loads(buf.split(b"\n", 1)[0])
                    if report.get("ok"):
                        notice = Text("all workers RUNNING; Ctrl-C stops everything", style="green")
                    else:
                        notice = Text(_failure_text(report, sd), style="red")
            if stopping:
                notice = Text(f"{stopping[0]}: stopping workers in reverse start order…", style="magenta")
            try:
                if client is None:
                    client = client_for_state(sd)
                data = client.get("/api/workers/status", timeout=2.0)
                table = Text.from_ansi(status_text(data["workers"], colour=console.is_terminal, width=console.width))
                live.update(Group(Text(f"cogoctl — {profile}", style="bold"), table, notice))
            except NoSupervisorError:
                live.update(notice)
            except Exception:
                live.update(notice)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
    code = proc.returncode
    if report is None and ready_r >= 0:  # it exited before the loop read its report
        os.set_blocking(ready_r, True)
        report = _read_report(ready_r)
    if report is not None and "error" in report:  # refused before starting anything (bad profile, lock held)
        exc = StartFailedError(str(report["error"]))
        exc.exit_code = ExitCode(report["code"]) if report.get("code") in iter(ExitCode) else ExitCode.FAILED
        raise exc
    if code not in (0, None) and not stopping:
        tail = _supervisor_out_tail(sd)
        err(f"cogoctl: the supervisor exited with code {code}" + (f":\n{tail}" if tail else ""))
        raise typer.Exit(code if code > 0 else 1)
    console.print("all workers stopped")


def down(
    profile: ProfileOpt = "dev",
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return once the shutdown is requested.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for everything to stop.")] = 120.0,
) -> None:
    sd = state_dir_for(profile)
    client = client_for(profile)
    answer = client.post("/api/shutdown")
    if no_wait:
        print(f"shutdown requested (supervisor pid {answer['pid']})")
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _lock_free(sd):
            print(f"supervisor pid {answer['pid']} and all its workers stopped")
            return
        time.sleep(0.05)
    raise StartFailedError(f"the supervisor (pid {answer['pid']}) did not stop within {timeout:g}s")


def reload(
    profile: ProfileOpt = "dev",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only; change nothing.")] = False,
) -> None:
    client = client_for(profile, timeout=None)
    result = client.post("/api/reload", {"dry_run": dry_run, "environ": dict(os.environ)})
    p = result["plan"]
    print("plan:")
    for step in p["steps"]:
        why = f" ({'; '.join(step['reasons'])})" if step["reasons"] else ""
        count = (
            f" x{step['instances']}" if step["action"] in ("start", "scale") and step["instances"] is not None else ""
        )
        print(f"  {step['action']:8s} {step['worker']}{count}{why}")
    for key in p["needs_down_up"]:
        print(f"  needs down/up: {key} changed (cannot change under a running supervisor)")
    for key in p["applied_live"]:
        print(f"  applied live: {key} changed")
    if dry_run:
        print("(dry run: nothing changed)")
        return
    failed = False
    print("outcome:")
    for o in result["outcome"]:
        if o["action"] == "keep":
            continue
        failed |= not o["ok"]
        print(f"  {o['action']:8s} {o['worker']}: {'done' if o['ok'] else 'FAILED'} (pids {o['pids'] or '-'})")
    if failed:
        raise typer.Exit(ExitCode.FAILED)
