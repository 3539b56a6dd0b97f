"""Runs inside the sandboxed interpreter (started with -I -S -B, as its own uid, already limited).

Not imported by the worker: its source is passed with -c, so the sandbox needs to read nothing
of the project's. Protocol on fd 0 (requests, JSON lines) and fd 3 (status, JSON lines):

  one-shot: read one request, run it, print the request's end marker on stdout and stderr,
            report {"done": exit_code, "error": kind|null, "peak_rss_mb"}, exit.
  session:  the same in a loop, in the session's persistent globals; exit on EOF.
"""

BOOTSTRAP = r"""
import errno, io, json, os, resource, sys, traceback
status = os.fdopen(3, "w", buffering=1)
requests = os.fdopen(0, "r")
session = sys.argv[1] == "session"
glob = {"__name__": "__main__", "__builtins__": __builtins__}

import ctypes
_prctl = ctypes.CDLL(None).prctl

def name(n):  # what `ps` shows: waiting, running, or a session between runs (PR_SET_NAME)
    _prctl(15, n.encode(), 0, 0, 0)

while True:
    name("sandbox-session" if session else "sandbox-warm")
    line = requests.readline()
    if not line:
        break
    name("sandbox-run")
    req = json.loads(line)
    os.chdir(req["cwd"])
    for p in req.get("sys_path", []):
        if p not in sys.path:
            sys.path.insert(0, p)
    sys.argv = [req.get("name", "<code>")] + list(req.get("args", []))
    sys.stdin = io.StringIO(req.get("stdin", ""))
    code, error = 0, None
    try:
        g = glob if session else {"__name__": "__main__", "__builtins__": __builtins__}
        exec(compile(req["source"], req.get("name", "<code>"), "exec"), g)
    except SystemExit as e:
        c = e.code
        code = c if isinstance(c, int) else (0 if c is None else 1)
        if not isinstance(c, int) and c is not None:
            print(c, file=sys.stderr)
    except MemoryError:
        code, error = 1, "memory"
        print("MemoryError: the run exceeded its memory limit", file=sys.stderr)
    except OSError as e:  # Python ignores SIGXFSZ: the file size limit arrives as EFBIG
        code = 1
        if e.errno == errno.EFBIG:
            error = "file_size"
        traceback.print_exc()
    except BaseException:
        code = 1
        traceback.print_exc()
    sys.stdout.flush(); sys.stderr.flush()
    try:  # the end of this run's output on each stream (the code may have closed them)
        sys.stdout.write(req["marker"]); sys.stdout.flush()
        sys.stderr.write(req["marker"]); sys.stderr.flush()
    except (OSError, ValueError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    status.write(json.dumps({"done": code, "error": error, "peak_rss_mb": round(rss, 1)}) + "\n")
    if not session:
        break
"""
