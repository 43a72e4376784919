#!/usr/bin/python3
"""Run test suites one after another and report each one's outcome and time.

Usage:
    /usr/bin/python3 tests/vm/suites.py NAME=COMMAND [NAME=COMMAND ...]

Meant for the inside of a tools/vmtest VM (make vmtest), where one command
is all the host can run: each COMMAND is run with /bin/sh -c, its output
passed through as it comes, after a line ``== NAME``. At the end, a table
of NAME, ``pass``/``FAIL (exit N)`` and wall seconds, the kernel it ran on,
and exactly ``N suites passed, M failed`` alone on a line; exit status 0
only if every suite exited 0 (2 on a usage error).
"""

import os
import subprocess
import sys
import time


def main(argv):
    suites = []
    for arg in argv:
        name, sep, cmd = arg.partition("=")
        if not sep or not name or not cmd:
            print("suites.py: %r: expected NAME=COMMAND" % arg, file=sys.stderr)
            return 2
        suites.append((name, cmd))
    if not suites:
        print("usage: suites.py NAME=COMMAND [NAME=COMMAND ...]", file=sys.stderr)
        return 2
    results = []
    for name, cmd in suites:
        print("== %s: %s" % (name, cmd), flush=True)
        start = time.monotonic()
        rc = subprocess.run(["/bin/sh", "-c", cmd]).returncode
        results.append((name, rc, time.monotonic() - start))
    failed = sum(1 for _, rc, _ in results if rc != 0)
    print("\n%-24s %-14s %8s" % ("suite", "result", "seconds"))
    for name, rc, secs in results:
        print("%-24s %-14s %8.0f" % (name, "pass" if rc == 0 else "FAIL (exit %d)" % rc, secs))
    print("kernel %s" % os.uname().release)
    print("%d suites passed, %d failed" % (len(results) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
