"""Forks a child in its group and a grandchild that escapes with setsid; writes their pids."""

import os
import sys
import time

out = sys.argv[1]
child = os.fork()
if child == 0:
    while True:
        time.sleep(1)
grand = os.fork()
if grand == 0:
    os.setsid()
    if os.fork() == 0:  # double fork: reparented away from us
        with open(out + ".escaped", "w") as fh:
            fh.write(str(os.getpid()))
        while True:
            time.sleep(1)
    os._exit(0)
os.waitpid(grand, 0)
with open(out, "w") as fh:
    fh.write(f"{os.getpid()} {child}")
print("forked", flush=True)
while True:
    time.sleep(1)
