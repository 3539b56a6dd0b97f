"""Prints a line and exits at once with $EXIT_CODE (default 1)."""

import os
import sys

print(f"failing on purpose with {os.environ.get('EXIT_CODE', '1')}", flush=True)
print("boom: cannot open the database", file=sys.stderr, flush=True)
sys.exit(int(os.environ.get("EXIT_CODE", "1")))
