"""The fork server: a clean interpreter (exec'd, single-threaded, no user code, no sockets but its
control channel) that forks a child per run. A fork of this small process is ~1 ms; exec'ing a
fresh interpreter per run cost ~8 ms of CPU (docs/BENCHMARKS.md).

Control channel (a Unix socket pair, the zygote's fd given in argv[1]):
  worker -> zygote: a JSON request with 4 fds (stdin, stdout, stderr, status) via SCM_RIGHTS
  zygote -> worker: {"pid": N} once forked; {"exit": N, "code": C} when it has reaped it
The child: new session, network namespace, rlimits, uid, fds 0-3, then the bootstrap (argv[2]).
"""

ZYGOTE = r"""
import ctypes, io, json, os, resource, select, signal, socket, sys
ctl = socket.socket(fileno=int(sys.argv[1]))
BOOT = sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
wake_r, wake_w = os.pipe()
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd tells the loop

def reap():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        ctl.sendall((json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}) + "\n").encode())

def child(req, fds):
    code = 70
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        if req["net"] and libc.unshare(0x40000000) != 0:
            os._exit(71)
        for name, (soft, hard) in req["rlimits"]:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(4, 1 << 16)  # the control socket and everything else
        if req["uid"] is not None:
            os.setgroups([]); os.setgid(req["uid"]); os.setuid(req["uid"])
        os.chdir(req["cwd"])
        os.environ.clear(); os.environ.update(req["env"])
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
        sys.argv = ["<sandbox>", req["mode"]]
        exec(compile(BOOT, "<bootstrap>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        os._exit(code)

while True:
    ready, _, _ = select.select([ctl, wake_r], [], [])
    if wake_r in ready:
        os.read(wake_r, 4096)
        reap()
    if ctl not in ready:
        continue
    data, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 4)
    if not data:
        break
    req = json.loads(data)
    pid = os.fork()
    if pid == 0:
        child(req, fds)
    for fd in fds:
        os.close(fd)
    ctl.sendall((json.dumps({"pid": pid}) + "\n").encode())
"""
