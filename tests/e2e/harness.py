"""The runner every end-to-end suite shares: results, signals, cleanup, the closing line.

A suite's output is read by CI and by people, so its shape is fixed here once:

    PASS name
    FAIL name: why; why (+N more)
    SKIP name: why
    (12.3s)                                  (on stderr)
    N passed, M failed[, K skipped]

and the exit status is 0 only if no case failed (2, before anything runs, when
the suite is not root).

Use (in a suite's main):

    args = harness.arg_parser(__doc__, keep_help="logs, queue").parse_args(argv)
    if not harness.require_root("x_run.py must run as root (cgroups, port 25)"):
        return 2
    results = harness.Results()
    with harness.Run(results, keep=args.keep) as suite:
        tmp = suite.tempdir("tlsguard-x-")
        cgroup = Cgroup.create(prefix="tlsguard-x")
        suite.push(cgroup.remove)
        ...
        suite.push_daemon(daemon)
        daemon.start()
        ...
        results.report("case", problems)
    return suite.finish()

Inside ``with``, SIGTERM raises KeyboardInterrupt like Ctrl-C does; either one
ends the cases with a failed case "interrupted" and the cleanup still runs.  The
cleanup runs in the reverse order of ``push`` with SIGINT and SIGTERM ignored
(each step is bounded, and a second Ctrl-C must not leave a cgroup or a daemon
behind); what a step raises, or the reasons it returns (a string, or a list of
them), become problems of one case "cleanup", and the steps after it still run.
Where a start can fail half way (Postfix, a daemon, unbound), its stop is pushed
before the start, so that the half is undone too.  The temp dir goes last,
unless --keep.
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def arg_parser(doc, keep_help=None, verbose_help=None, verbose=True):
    """The options every suite takes: --tlsguardd, --tlsguardctl (the build's by
    default), --keep (the temp dir: ``keep_help`` says what is in it), -v."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--tlsguardd", default=os.path.join(REPO, "build", "tlsguardd"))
    ap.add_argument("--tlsguardctl", default=os.path.join(REPO, "build", "tlsguardctl"))
    ap.add_argument("--keep", action="store_true", help=keep_help and "keep the temp dir (%s)" % keep_help)
    if verbose:
        ap.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    return ap


class Results:
    """The cases of one run, printed as they come.

    A FAIL line names the first ``shown`` problems; ``more`` adds how many were
    left out.  (Each suite keeps the width it always had.)"""

    def __init__(self, shown=5, more=True):
        self.shown = shown
        self.more = more
        self.cases = []  # (name, problems)
        self.skipped = []

    def report(self, name, problems, info=()):
        """Record a case: passed if ``problems`` is empty; ``info`` lines follow, indented."""
        self.cases.append((name, problems))
        if problems:
            more = ""
            if self.more and len(problems) > self.shown:
                more = " (+%d more)" % (len(problems) - self.shown)
            print("FAIL %s: %s%s" % (name, "; ".join(str(p) for p in problems[:self.shown]), more), flush=True)
        else:
            print("PASS %s" % name, flush=True)
        self.say(info)

    def skip(self, name, why, info=(), counted=False):
        """A case not run, and why.  Counted in ", K skipped", or with ``counted``
        among the passed cases (a suite whose closing line always did so)."""
        if counted:
            self.cases.append((name, []))
        else:
            self.skipped.append(name)
        print("SKIP %s: %s" % (name, why), flush=True)
        self.say(info)

    @staticmethod
    def say(lines):
        for x in lines:
            print("    " + x, flush=True)

    @property
    def failed(self):
        return sum(1 for _, p in self.cases if p)

    @property
    def passed(self):
        return len(self.cases) - self.failed

    def summary(self):
        """The closing line, and the exit status."""
        print("%d passed, %d failed%s" % (self.passed, self.failed,
                                           ", %d skipped" % len(self.skipped) if self.skipped else ""), flush=True)
        return 1 if self.failed else 0


def require_root(message):
    """True if root; else say ``message`` on stderr (the caller exits 2)."""
    if os.geteuid() == 0:
        return True
    print(message, file=sys.stderr)
    return False


def sigterm_interrupts(signum, frame):
    """A SIGTERM handler: end the run as Ctrl-C does, through its cleanup."""
    raise KeyboardInterrupt("SIGTERM")


class Run:
    """The body of a suite: signals, the timing, the cleanup stack, the temp dir."""

    def __init__(self, results, keep=False):
        self.results = results
        self.keep = keep
        self.tmp = None
        self.interrupted = False
        self.t0 = time.monotonic()
        self._stack = []

    def __enter__(self):
        self.t0 = time.monotonic()
        signal.signal(signal.SIGTERM, sigterm_interrupts)
        return self

    def tempdir(self, prefix, mode=None):
        """The run's temp dir, removed after every other cleanup unless --keep."""
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        if mode is not None:
            os.chmod(self.tmp, mode)
        return self.tmp

    def push(self, fn, *args):
        """Run ``fn(*args)`` at cleanup, before what was pushed earlier."""
        self._stack.append((fn, args))
        return fn

    def push_daemon(self, daemon):
        """Stop a run.Daemon at cleanup and report "tlsguardd_shutdown": it
        must exit 0 on SIGTERM.  Not after an interrupt, nor when it died
        early (its setup case said so already)."""
        def stop():
            why = daemon.stop()
            if not self.interrupted and not daemon.died_early:
                self.results.report("tlsguardd_shutdown", [why] if why else [])
        self.push(stop)

    def __exit__(self, etype, e, tb):
        if etype is not None and issubclass(etype, KeyboardInterrupt):
            self.interrupted = True
            self.results.report("interrupted", ["Ctrl-C or SIGTERM; cleaned up"])
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # cleanup is bounded; let it finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        problems = []
        while self._stack:
            fn, args = self._stack.pop()
            try:
                why = fn(*args)
            except Exception as ex:  # noqa: BLE001 -- one step's failure must not skip the rest
                why = str(ex)
            if isinstance(why, str):
                why = [why]
            if isinstance(why, list):
                problems += [x for x in why if isinstance(x, str) and x]
        if problems:
            self.results.report("cleanup", problems)
        if self.tmp is not None:
            if self.keep:
                print("kept %s" % self.tmp, file=sys.stderr)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        return self.interrupted

    def finish(self):
        """The timing line on stderr, the closing line; returns the exit status."""
        print("(%.1fs)" % (time.monotonic() - self.t0), file=sys.stderr)
        return self.results.summary()
