#!/usr/bin/python3
"""Run the end-to-end suites of tests/e2e/SUITES one after another, and report
each one's outcome and time.

Usage (from the top of the tree; root, as the suites want):
    /usr/bin/python3 tests/e2e/runner.py [--tlsguardd build/tlsguardd]
        [--tlsguardctl build/tlsguardctl] [--build build] [--mta-deps build/deps]
        [--tag TAG] [--list FILE] [NAME=COMMAND ...] [NAME ...]

The suites are the lines of ``--list`` (tests/e2e/SUITES): ``NAME TAGS
ARGUMENTS``, run as ``PYTHON tests/e2e/suites/NAME.py ARGUMENTS`` with
/bin/sh -c, in the order of the file.  With ``--tag``, only the lines whose
TAGS (comma-separated) name it; with bare NAMEs, only those suites.  Each
``NAME=COMMAND`` is run first, as given (``make vmtest`` runs the verifier
check and the unit tests so).  In ARGUMENTS, $TOOLS stands for ``--tlsguardd
TLSGUARDD --tlsguardctl TLSGUARDCTL``; $PYTHON, $TLSGUARDD, $TLSGUARDCTL,
$BUILD and $MTA_DEPS for the interpreter and the options above.

Each suite's output is passed through as it comes, after a line ``== NAME:
COMMAND`` (its variables filled in).  At the end, a table of NAME, ``pass``/``FAIL (exit N)`` and wall
seconds, the kernel it ran on, and exactly ``N suites passed, M failed`` alone
on a line; exit status 0 only if every suite exited 0 (2 on a usage error).
Every suite runs, also after one has failed.  Commands run in the top of the
tree: relative paths in the options are read from there.
"""

import argparse
import os
import re
import subprocess
import sys
import time

E2E = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(E2E))


def read_list(path):
    """[(name, tags, arguments)] of a suite list; raise ValueError on a bad line."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split(None, 2)
            if len(fields) < 2:
                raise ValueError("%s:%d: expected NAME TAGS [ARGUMENTS]" % (path, n))
            name, tags = fields[0], fields[1]
            if not os.path.exists(os.path.join(E2E, "suites", name + ".py")):
                raise ValueError("%s:%d: no tests/e2e/suites/%s.py" % (path, n, name))
            out.append((name, set() if tags == "-" else set(tags.split(",")), fields[2] if len(fields) > 2 else ""))
    return out


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tlsguardd", default="build/tlsguardd")
    ap.add_argument("--tlsguardctl", default="build/tlsguardctl")
    ap.add_argument("--build", default="build")
    ap.add_argument("--mta-deps", default="build/deps")
    ap.add_argument("--tag", help="only the suites with this tag")
    ap.add_argument("--list", default=os.path.join(E2E, "SUITES"), help="the suite list")
    ap.add_argument("suites", nargs="*", metavar="NAME=COMMAND | NAME")
    args = ap.parse_intermixed_args(argv)
    try:
        listed = read_list(args.list)
    except (OSError, ValueError) as e:
        print("runner.py: %s" % e, file=sys.stderr)
        return 2
    extra, names = [], []
    for arg in args.suites:
        name, sep, cmd = arg.partition("=")
        if sep and name and cmd:
            extra.append((name, cmd))
        elif not sep and name in {x[0] for x in listed}:
            names.append(name)
        else:
            print("runner.py: %r: expected NAME=COMMAND or a suite of %s" % (arg, args.list), file=sys.stderr)
            return 2
    suites = extra + [(name, "$PYTHON %s %s" % (os.path.join("tests", "e2e", "suites", name + ".py"), rest))
                      for name, tags, rest in listed
                      if (not args.tag or args.tag in tags) and (not names or name in names)]
    if not suites:
        print("runner.py: no suite to run", file=sys.stderr)
        return 2
    env = dict(os.environ, PYTHON=sys.executable, TLSGUARDD=args.tlsguardd, TLSGUARDCTL=args.tlsguardctl,
               BUILD=args.build, MTA_DEPS=args.mta_deps,
               TOOLS="--tlsguardd %s --tlsguardctl %s" % (args.tlsguardd, args.tlsguardctl))
    results = []
    for name, cmd in suites:
        shown = re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), m.group(0)), cmd)
        print("== %s: %s" % (name, shown), flush=True)
        start = time.monotonic()
        rc = subprocess.run(["/bin/sh", "-c", cmd], env=env, cwd=REPO).returncode
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
