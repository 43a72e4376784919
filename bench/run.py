#!/usr/bin/python3
"""tlsguard benchmarks: what tlsguard costs an MTA, and how it scales.

Usage (as root, from the repository; ``make bench`` builds everything first):
    /usr/bin/python3 bench/run.py [--tlsguardd build/tlsguardd]
        [--tlsguardctl build/tlsguardctl] [--bin bench/build] [--out bench]
        [--rounds N] [--only 1,2,...] [--quick]
    /usr/bin/python3 bench/run.py --report bench/results.json [--out bench]
        (runs nothing: RESULTS.md written again from a run's samples)

TLS libraries: tlsguardd runs as a mail host runs it, with
tls_library_copies = a directory of the run's own: it copies the system's
libssl and libgnutls there and puts its uprobes on the copies. Every
process that runs in a cgroup the run guards (the load generators, case
3's Postfix) runs in a private mount namespace with the copies bound over
the system's files, in every mode (without, floor, with), so that the
modes differ only by what is attached; processes outside (the sinks, case
8's loads) map the system's files and trap on no uprobe.

Cases (each "with" and "without" tlsguardd attached; cases 1 and 2 run
the modes at the same time, the others A B A B ...):
  1. raw flow rate: smtp-source (one message per connection, 4096-byte
     payload, a sender nobody guarantees) in the mode's cgroup, to its
     smtp-sink (127.0.0.61, .71, .73:25), at 1, 10 and 50 sessions;
     messages/s. Without, floor and with run side by side, a window of
     WINDOW_S a round, each its load again and again; each mode has its
     own cgroup, sinks and copies of the TLS libraries (rate_window()).
  2. TLS flows: bench/tls_source (STARTTLS, TLS 1.3, 10 messages per
     session; the mode's copies bound) to bench/tls_sink (127.0.0.62, .72,
     .74:25); same concurrencies, same windows.
  3. whole MTA: 10,000 messages held in a private Postfix's queue (put on
     hold by a header check while injected through its own smtpd), then
     released; time until the queue is empty, all delivered to smtp-sink
     (plaintext) or to tls_sink (STARTTLS at smtp_tls_security_level=may).
     Postfix runs with the copies bound (PostfixInstance binds).
  4. verdict latency: bench/held_latency, a guaranteed sender's MAIL FROM
     (+RCPT, DATA pipelined) until the 550 is read; 10,000 held messages
     on one connection (RSET between) and 10,000 on one connection each.
  5. policy scale: 1,000,000 guaranteed senders vs 10: start time, memory
     of tg_senders (fdinfo memlock), agent RSS, SIGHUP reload time, and
     the kernel path's cost (held latency, plaintext rate, and
     tg_smtp_msg's run time per invocation from the kernel's BPF stats).
  6. flow scale: 10,000 concurrent tracked flows (bench/flow_hold);
     memory per flow (map memlock, slab), tlsguardd RSS before and after.
  7. policy from PostgreSQL: 1,000,000 guaranteed senders in a cluster of
     the run's own (initdb, pg_ctl; dist/pgsql/schema.sql), tlsguardd with
     senders_file = pgsql:FILE: the first sync (the agent's own figure and
     spawn until status answers), VmHWM, one change from COMMIT to the
     kernel map, and a start on the 1,000,000-sender snapshot with the
     database unreachable.
  8. outside the guarded cgroup: the plaintext and TLS loads of cases 1
     and 2 (10 sessions) in a cgroup tlsguard does not guard, with the
     system's libraries, while tlsguardd guards another (empty) one: what
     tlsguard costs the rest of the host. A fourth mode, "with, shared
     libraries": tlsguardd without tls_library_copies, its uprobes on the
     system's files, which the load maps: what the copies save.
  Then a profile of the cases that cost most: BPF run times per program
  (kernel BPF stats) and a perf sample, with and without tlsguardd.

The floor: cases 1, 2, 3 and 8 also run a third way, "floor": no
tlsguardd, but bench/null_hooks attached instead: programs that do
nothing, on the same hooks as tlsguard's (sock_ops, connect4/6 on the
cgroup, sk_msg and sk_skb on a sockhash that holds every port-25 flow,
uprobes on the same libssl/libgnutls functions of the same files:
tlsguardd's copies, given with null_hooks --tls-lib). What the floor costs is
what the kernel mechanism costs by itself; with / floor is tlsguard's own
share. A ratio target that is missed is met at the floor when with /
floor reaches it.

Outputs: OUT/RESULTS.md (machine, every figure, the targets met or not),
OUT/throughput.png (gnuplot) and OUT/results.json (every sample).  The
benchmark reports; it never fails on a figure.  Exit status 0 when it ran
to the end (a case that broke is reported in RESULTS.md), 1 when it could
not set up, 130 when interrupted.

Traffic stays on loopback.  Programs are attached only to the cgroups this
run creates.  Everything it starts is stopped by pid, and its cgroups, temp
dirs and Postfix instance are removed, also on Ctrl-C, SIGTERM or SIGHUP.
The kernel's BPF run-time statistics are switched on only while a profile
runs, through a BPF_ENABLE_STATS descriptor (the kernel switches them off
when it is closed, even if this process dies); where that syscall is not
available, through kernel.bpf_stats_enabled, restored afterwards.
"""

import argparse
import ctypes
import datetime
import resource
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "e2e", "fixtures"))
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

from postfix_env import Cgroup, PostfixInstance, check_postfix_installed  # noqa: E402

# ------------------------------------------------------------ parameters

CONCURRENCY = (1, 10, 50)
MSG_LEN = 4096
# Messages per run, chosen so that a run lasts 1-3 s on the project's
# 2-core machines: long against start-up noise, short enough for rounds.
PLAIN_MESSAGES = {1: 4000, 10: 8000, 50: 8000}
TLS_MESSAGES = {1: 4000, 10: 8000, 50: 8000}
TLS_PER_SESSION = 10
ROUNDS = 5
MTA_MESSAGES = 10000
MTA_ROUNDS = {"plain": 2, "tls": 2}
HELD_MESSAGES = 10000
POLICY_SENDERS = 1000000
SENDER_ADDS = 200           # `sender add` requests timed per policy round
POLICY_ROUNDS = 2
FLOWS = 10000

SINK_PLAIN = "127.0.0.61:25"
SINK_TLS = "127.0.0.62:25"
# Cases 1 and 2 run the three modes at once (see case_rates()): each its
# own cgroup, sinks and copies of the TLS libraries; "A" (without) the
# sinks above.
SIDE_SINKS = {"A": (SINK_PLAIN, SINK_TLS), "F": ("127.0.0.71:25", "127.0.0.72:25"),
              "B": ("127.0.0.73:25", "127.0.0.74:25")}
WINDOW_S = 12.0             # how long the three loads run at once, a round
# Messages per load run in a window: each mode runs its load again and
# again; only runs that end within the window count.
WINDOW_MESSAGES = {1: 400, 10: 1000, 50: 1000}
HOLD_SINKS = ["127.0.0.65:25", "127.0.0.66:25", "127.0.0.67:25", "127.0.0.68:25"]

GUARANTEED = "alice@guaranteed.bench"
PLAIN_SENDER = "bob@plain.bench"
SMALL_SENDERS = [GUARANTEED, "@guaranteed-domain.bench"] + ["user%d@guaranteed.bench" % i for i in range(8)]

# A pair of runs during which other processes (the machine is shared) used
# more than this share of the CPUs is repeated, up to NOISY_ATTEMPTS times;
# the quietest attempt counts.
NOISY_SHARE = 0.10
NOISY_ATTEMPTS = 2
# Before each measurement, wait (at most QUIET_WAIT s, QUIET_BUDGET s in all)
# until the machine is idle but for us: less than NOISY_SHARE busy over 0.5 s.
QUIET_WAIT = 15.0
QUIET_BUDGET = 300.0

TARGET_RATIO = 0.98
TARGET_OUTSIDE = 0.99       # loads outside the guarded cgroup
OUTSIDE_SESSIONS = 10
TARGET_P99_US = 1000.0
TARGET_POLICY_BYTES = 64 << 20
TARGET_RSS_BYTES = 32 << 20
TARGET_STATUS_MS = 20.0

BPF_SYSCALL_X86_64 = 321
BPF_ENABLE_STATS = 32


class Interrupted(Exception):
    pass


def log(msg):
    print("bench: " + msg, flush=True)


def median(xs):
    return statistics.median(xs) if xs else None


def percentile(sorted_xs, p):
    """Nearest rank on a sorted list (p in 0..1)."""
    if not sorted_xs:
        return None
    return sorted_xs[min(len(sorted_xs) - 1, int(p * (len(sorted_xs) - 1) + 0.5))]


# ------------------------------------------------------------ system facts

def read(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def meminfo_kb(field):
    m = re.search(r"^%s:\s+(\d+) kB" % re.escape(field), read("/proc/meminfo"), re.M)
    return int(m.group(1)) if m else None


def proc_status_kb(pid, field):
    m = re.search(r"^%s:\s+(\d+) kB" % re.escape(field), read("/proc/%d/status" % pid), re.M)
    return int(m.group(1)) if m else None


def slab_bytes():
    """(all slab caches, kmalloc caches) in bytes: num_objs * objsize from /proc/slabinfo."""
    total = kmalloc = 0
    for line in read("/proc/slabinfo").splitlines()[2:]:
        f = line.split()
        if len(f) < 4:
            continue
        b = int(f[2]) * int(f[3])
        total += b
        if f[0].startswith("kmalloc-"):
            kmalloc += b
    return total, kmalloc


def kmalloc_class(n):
    """The kmalloc size class that an allocation of n bytes takes."""
    for c in (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192):
        if n <= c:
            return c
    return n


def btf_struct_sizes(names):
    """{struct name: size} from the running kernel's BTF."""
    r = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"],
                       capture_output=True, text=True, timeout=120)
    out = {}
    for m in re.finditer(r"^\[\d+\] STRUCT '(\w+)' size=(\d+)", r.stdout, re.M):
        if m.group(1) in names and m.group(1) not in out:
            out[m.group(1)] = int(m.group(2))
    return out


def cpu_busy_ticks():
    """(busy, user + nice + system) jiffies of all CPUs, from /proc/stat."""
    f = [int(x) for x in read("/proc/stat").splitlines()[0].split()[1:]]
    idle = f[3] + f[4]
    total = sum(f[:8])
    return total - idle, f[0] + f[1] + f[2]


PF_KTHREAD = 0x00200000


def kthread_cpu_ticks():
    """utime + stime of each kernel thread (kworkers, ksoftirqd: where sockmap defers work), by pid."""
    ticks = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            f = read("/proc/%s/stat" % name).rsplit(")", 1)[1].split()
            if int(f[6]) & PF_KTHREAD:
                ticks[int(name)] = int(f[11]) + int(f[12])
        except (IndexError, ValueError):
            pass
    return ticks


def kthread_ticks_delta(t0, t1):
    """What the kernel threads ran between two kthread_cpu_ticks(): of those alive at both, the
    difference; of those born meanwhile, all. A thread that exited meanwhile is left out: summing
    the totals instead took its whole life's CPU off (an old kworker's: 'others' above 300%)."""
    return sum(v - t0.get(pid, 0) for pid, v in t1.items())


def proc_cpu_ticks(pid):
    """utime + stime of a process (all its threads), in jiffies; 0 if it is gone."""
    try:
        f = read("/proc/%d/stat" % pid).rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    except (IndexError, ValueError):
        return 0


def machine_facts():
    cpu = re.search(r"^model name\s*:\s*(.*)$", read("/proc/cpuinfo"), re.M)

    def version(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"
    git = version(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": os.cpu_count(),
        "cpu": cpu.group(1).strip() if cpu else platform.processor(),
        "kernel": platform.release(),
        "debian": read("/etc/debian_version").strip(),
        "memory_gib": round((meminfo_kb("MemTotal") or 0) / 1048576, 1),
        "postfix": version(["/usr/sbin/postconf", "-h", "mail_version"]),
        "openssl": version(["openssl", "version"]),
        "commit": git + (" (with uncommitted changes)" if dirty else ""),
    }


# ------------------------------------------------------------ BPF objects

def bpf_fds(pid):
    """Maps and programs a process holds: ({map_id: fdinfo}, {prog_id: fdinfo})."""
    maps, progs = {}, {}
    fddir = "/proc/%d/fdinfo" % pid
    for fd in os.listdir(fddir):
        info = {}
        for line in read(os.path.join(fddir, fd)).splitlines():
            k, _, v = line.partition(":")
            info[k.strip()] = v.strip()
        if "map_id" in info:
            maps[int(info["map_id"])] = info
        elif "prog_id" in info:
            progs[int(info["prog_id"])] = info
    return maps, progs


def bpftool_json(*args):
    r = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError("bpftool %s: %s" % (" ".join(args), r.stderr.strip()))
    return json.loads(r.stdout)


def daemon_maps(pid):
    """{name: {id, type, max_entries, key, value, flags, memlock}} of a tlsguardd."""
    maps, _ = bpf_fds(pid)
    out = {}
    for mid, info in maps.items():
        show = bpftool_json("map", "show", "id", str(mid))
        out[show.get("name", str(mid))] = {
            "id": mid,
            "type": show.get("type"),
            "max_entries": int(info.get("max_entries", 0)),
            "key": int(info.get("key_size", 0)),
            "value": int(info.get("value_size", 0)),
            "flags": info.get("map_flags"),
            "memlock": int(info.get("memlock", 0)),
            "bpftool_bytes_memlock": show.get("bytes_memlock"),
        }
    return out


def daemon_progs(pid):
    """{name: {id, run_cnt, run_time_ns}} of a tlsguardd's programs."""
    _, progs = bpf_fds(pid)
    out = {}
    for pid_ in progs:
        show = bpftool_json("prog", "show", "id", str(pid_))
        out[show.get("name", str(pid_))] = {
            "id": pid_, "run_cnt": show.get("run_cnt", 0), "run_time_ns": show.get("run_time_ns", 0)}
    return out


def prog_delta(before, after):
    d = {}
    for name, a in after.items():
        b = before.get(name, {"run_cnt": 0, "run_time_ns": 0})
        cnt = a["run_cnt"] - b["run_cnt"]
        ns = a["run_time_ns"] - b["run_time_ns"]
        d[name] = {"run_cnt": cnt, "run_time_ns": ns, "avg_ns": (ns / cnt) if cnt else None}
    return d


class BpfStats:
    """The kernel's BPF run-time statistics, on for the life of this object."""

    def __init__(self):
        self.fd = None
        self.sysctl_old = None

    def __enter__(self):
        if platform.machine() == "x86_64":
            libc = ctypes.CDLL(None, use_errno=True)
            attr = (ctypes.c_uint8 * 128)()  # union bpf_attr; enable_stats.type = BPF_STATS_RUN_TIME (0)
            fd = libc.syscall(BPF_SYSCALL_X86_64, BPF_ENABLE_STATS, ctypes.byref(attr), 4)
            if fd >= 0:
                self.fd = fd
                return self
        path = "/proc/sys/kernel/bpf_stats_enabled"
        self.sysctl_old = read(path).strip() or "0"
        with open(path, "w") as f:
            f.write("1")
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.sysctl_old is not None:
            with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
                f.write(self.sysctl_old)
            self.sysctl_old = None

    @property
    def how(self):
        return "BPF_ENABLE_STATS" if self.fd is not None else "kernel.bpf_stats_enabled"


# ------------------------------------------------------------ processes

def in_cgroup(cg, argv):
    """argv run by a shell that first moves itself into cgroup cg."""
    return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', cg.procs_file] + list(argv)


def with_binds(binds, argv):
    """argv run in a private mount namespace where each (file, over) of binds is
    bound over its path (what a mail host does for its MTA with tlsguardd's
    copies of the TLS libraries); the namespace ends with the process."""
    script = 'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 1; shift 2; done; shift; exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "/bin/sh", "-c", script, "sh"] + \
        [p for b in binds for p in b] + ["--"] + list(argv)


def linked_path(binary, soname):
    """The file the dynamic loader maps for soname in binary (ldd), or None."""
    r = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30)
    m = re.search(r"^\s*%s => (\S+)" % re.escape(soname), r.stdout, re.M)
    return m.group(1) if m else None


def tcp_established(addrs):
    """Established IPv4 TCP connections to any of addrs ("a.b.c.d:port")."""
    want = set()
    for a in addrs:
        host, port = a.rsplit(":", 1)
        want.add("%08X:%04X" % (int.from_bytes(socket.inet_aton(host), "little"), int(port)))
    n = 0
    for line in read("/proc/net/tcp").splitlines()[1:]:
        f = line.split()
        if len(f) > 3 and f[3] == "01" and f[2] in want:
            n += 1
    return n


def ctl_request(path, request, timeout=5.0):
    """tlsguardd's reply on its control socket to one request line (what tlsguardctl sends)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(request.encode() + b"\n")
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    finally:
        s.close()
    return b"".join(chunks).decode(errors="replace")


def ctl_status(path, timeout=5.0):
    """The reply to "status" (what tlsguardctl status asks)."""
    return ctl_request(path, "status", timeout)


def parse_status(text):
    out = {}
    for line in text.splitlines()[1:]:
        k, _, v = line.partition(":")
        v = v.strip()
        out[k.strip()] = int(v) if v.isdigit() else v
    return out


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = None
        self.procs = []  # every Popen we started, killed by pid at the end
        self.sinks = []  # the long-running sinks among them
        self.last_other = 0.0
        self.last_split = {}
        self.quiet_waited = 0.0
        self.cgroups = []
        self.bound = set()  # paths of the cgroups whose processes run with the copies bound
        self.cg_binds = {}  # cgroup path -> its own (copy, system file) pairs, where not self.binds
        self.copydir = None  # tls_library_copies
        self.binds = []  # (copy, system file) pairs
        self.pf_root = None
        self.postfix = None
        self.daemon = None
        self.floor = None
        self.daemon_sock = None
        # Its own pin dir: tlsguardd leaves the kernel enforcing when it
        # stops; stop_daemon() removes that with tlsguardctl detach, so
        # that each start is a fresh one (and nothing is left at the end).
        self.pin_dir = "/sys/fs/bpf/tlsguard-bench-%d-%s" % (os.getpid(), os.urandom(3).hex())
        self.results = {"errors": []}

    # ---- process bookkeeping ----------------------------------------

    def in_load(self, cg, argv):
        """argv run in cg; in a cgroup that tlsguardd guards (or the floor's hooks
        are on), with tlsguardd's copies of the TLS libraries bound over the
        system's, as the MTA runs on a mail host."""
        if cg.path in self.bound:
            argv = with_binds(self.cg_binds.get(cg.path, self.binds), argv)
        return in_cgroup(cg, argv)

    def spawn(self, argv, cg=None, **kw):
        if cg is not None:
            argv = self.in_load(cg, argv)
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def reap(self, p, timeout=10.0, sig=signal.SIGTERM):
        """Stop one process we started, by pid; returns its exit status."""
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        if p in self.procs:
            self.procs.remove(p)
        return p.returncode

    def own_cpu_ticks(self):
        """CPU time of this benchmark's processes, in jiffies: (load generators
        (waited-for children), sinks, tlsguardd, all kernel threads)."""
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ((ru.ru_utime + ru.ru_stime) * os.sysconf("SC_CLK_TCK"),
                sum(proc_cpu_ticks(p.pid) for p in self.sinks),
                proc_cpu_ticks(self.daemon.pid) if self.daemon else 0,
                kthread_cpu_ticks())

    def run_load(self, argv, cg, timeout=300):
        """Run a load generator in cg; (elapsed wall s, cpu busy s, stdout).

        Also keeps, in self.last_other, the share of the machine's CPUs that
        processes other than this benchmark's used meanwhile (user + system
        time): the noise of a shared machine."""
        busy0, us0 = cpu_busy_ticks()
        own0 = self.own_cpu_ticks()
        t0 = time.monotonic()
        p = self.spawn(argv, cg, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.reap(p, sig=signal.SIGKILL)
            raise RuntimeError("%s: no result within %d s" % (os.path.basename(argv[0]), timeout))
        elapsed = time.monotonic() - t0
        busy1, us1 = cpu_busy_ticks()
        own1 = self.own_cpu_ticks()
        hz = os.sysconf("SC_CLK_TCK")
        d = [(b - a) / hz for a, b in zip(own0[:3], own1[:3])] + [kthread_ticks_delta(own0[3], own1[3]) / hz]
        self.last_split = {"generator": d[0], "sinks": d[1], "tlsguardd": d[2], "kthreads": d[3]}
        self.last_other = max(0.0, ((us1 - us0) / hz - sum(d)) / (elapsed * os.cpu_count()))
        self.procs.remove(p)
        if p.returncode != 0:
            raise RuntimeError("%s exited with %d: %s" % (" ".join(argv), p.returncode, (err or out).strip()[-500:]))
        return elapsed, (busy1 - busy0) / os.sysconf("SC_CLK_TCK"), out

    def mkcgroup(self, prefix, bound=True):
        """A cgroup of this run; bound: its processes run with the copies bound
        (a cgroup to guard), or not (the rest of the host)."""
        cg = Cgroup.create(prefix)
        self.cgroups.append(cg)
        if bound:
            self.bound.add(cg.path)
        return cg

    def wait_listening(self, addr, proc, timeout=5.0):
        host, port = addr.rsplit(":", 1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("%s exited with %d before listening on %s" % (proc.args[0], proc.returncode, addr))
            with socket.socket() as s:
                s.settimeout(1)
                try:
                    s.connect((host, int(port)))
                    return
                except OSError:
                    time.sleep(0.02)
        raise RuntimeError("nothing listens on %s after %.0f s" % (addr, timeout))

    def start_smtp_sink(self, addr):
        p = self.spawn(["smtp-sink", "-u", "nobody", addr, "4096"], start_new_session=True,
                       stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.tmp, "smtp-sink.log"), "a"))
        self.sinks.append(p)
        self.wait_listening(addr, p)
        return p

    def start_tls_sink(self, addr):
        p = self.spawn([self.bin("tls_sink"), "-c", self.cert, "-k", self.key, addr], start_new_session=True,
                       stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.tmp, "tls_sink.log"), "a"))
        self.sinks.append(p)
        self.wait_listening(addr, p)
        return p

    def bin(self, name):
        return os.path.join(self.args.bin, name)

    # ---- tlsguardd ----------------------------------------------------

    def start_daemon(self, cg, senders, copies=True):
        """Start tlsguardd on cg; returns seconds until status answers (senders: a
        file, or pgsql:FILE). copies: with tls_library_copies (as a mail host
        runs it), or probing the system's TLS libraries."""
        assert self.daemon is None
        sock = os.path.join(self.tmp, "tlsguardd.sock")
        self.daemon_log = os.path.join(self.tmp, "tlsguardd.log")
        self.daemon_sock = sock
        self.daemon_logpos = os.path.getsize(self.daemon_log) if os.path.exists(self.daemon_log) else 0
        argv = [self.args.tlsguardd, "--cgroup", cg.path, "--senders", senders, "--port", "25",
                "--socket", sock, "--pin-dir", self.pin_dir]
        if copies and self.copydir:
            argv += ["--tls-library-copies", self.copydir]
        t0 = time.monotonic()
        self.daemon = self.spawn(argv, stdout=open(self.daemon_log, "a"), stderr=subprocess.STDOUT,
                                 start_new_session=True)
        deadline = t0 + 120
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                rc = self.daemon.returncode
                self.procs.remove(self.daemon)
                self.daemon = None
                raise RuntimeError("tlsguardd exited with %d: %s" % (rc, read(self.daemon_log)[-500:]))
            try:
                if ctl_status(sock, timeout=30).startswith("ok"):
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.002)
        raise RuntimeError("tlsguardd did not answer status within 120 s")

    def daemon_status(self):
        return parse_status(ctl_status(self.daemon_sock))

    def start_floor(self, cg):
        """bench/null_hooks on cg: tlsguard's hooks, programs that do nothing."""
        assert self.floor is None
        argv = [self.bin("null_hooks"), "--cgroup", cg.path]
        # the floor traps where tlsguardd does: in the copies its cgroup maps
        for copy, _ in self.cg_binds.get(cg.path, self.binds):
            argv += ["--tls-lib", copy]
        self.floor = self.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        line = self.floor.stdout.readline()
        if line.strip() != "ready":
            p, self.floor = self.floor, None
            err = p.stderr.read() if p.wait(10) is not None else ""
            self.procs.remove(p)
            raise RuntimeError("null_hooks: %s" % (err.strip()[-300:] or "exited before ready"))

    def stop_floor(self):
        if self.floor is None:
            return
        p, self.floor = self.floor, None
        if self.reap(p) != 0:
            self.results["errors"].append("null_hooks exited with %s after SIGTERM" % p.returncode)

    def floored(self, fn, cg):
        """Run fn() with the null hooks attached to cg (the floor)."""
        self.start_floor(cg)
        try:
            return fn()
        finally:
            self.stop_floor()

    def stop_daemon(self):
        if self.daemon is not None:
            p, self.daemon = self.daemon, None
            rc = self.reap(p, timeout=20)
            if rc != 0:
                self.results["errors"].append("tlsguardd exited with %s after SIGTERM" % rc)
            # A process of the guarded cgroup that mapped the system's TLS library
            # made tlsguardd probe it for the whole host: the run is not what it says.
            for line in read(self.daemon_log)[self.daemon_logpos:].splitlines():
                if "not one of the copies" in line and line not in self.results["errors"]:
                    self.results["errors"].append(line)
        self.detach()

    def detach(self):
        """tlsguardctl --pin-dir DIR detach: what a stopped tlsguardd left enforcing, removed."""
        if not os.path.exists(self.pin_dir):
            return
        r = subprocess.run([self.args.tlsguardctl, "--socket", self.daemon_sock or "/nonexistent",
                            "--pin-dir", self.pin_dir, "detach"], capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or os.path.exists(self.pin_dir):
            self.results["errors"].append("tlsguardctl --pin-dir %s detach: exit %d %s" % (
                self.pin_dir, r.returncode, r.stderr.strip()[-200:]))

    # ---- the cases ----------------------------------------------------

    def setup(self):
        self.tmp = tempfile.mkdtemp(prefix="tlsguard-bench-")
        os.chmod(self.tmp, 0o755)
        # Run copies: the same binaries throughout, whatever is rebuilt meanwhile.
        for attr in ("tlsguardd", "tlsguardctl"):
            copy = os.path.join(self.tmp, attr)
            shutil.copy2(getattr(self.args, attr), copy)
            setattr(self.args, attr, copy)
        self.cert = os.path.join(self.tmp, "cert.pem")
        self.key = os.path.join(self.tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=tls-sink.bench", "-keyout", self.key,
                        "-out", self.cert], check=True, capture_output=True)
        self.small_senders = os.path.join(self.tmp, "senders-10")
        with open(self.small_senders, "w") as f:
            f.write("# tlsguard bench: 10 guaranteed senders\n" + "".join(s + "\n" for s in SMALL_SENDERS))
        self.cg_load = self.mkcgroup("tlsguard-bench-load")
        self.setup_copies()
        self.sink_plain = self.start_smtp_sink(SINK_PLAIN)
        self.sink_tls = self.start_tls_sink(SINK_TLS)

    def setup_copies(self):
        """tls_library_copies in the temp dir, filled by one start of tlsguardd
        (as on a mail host, where tlsguardd starts before the MTA); what it
        copied from where is the bench's binds. Checks that a process run with
        them maps the copy of libssl where the loader looks."""
        self.copydir = os.path.join(self.tmp, "tls-copies")
        os.mkdir(self.copydir, 0o755)
        self.start_daemon(self.cg_load, self.small_senders)
        self.stop_daemon()
        text = read(self.daemon_log)[self.daemon_logpos:]
        for src, dst in re.findall(r"copied (/\S+) to (/\S+)", text):
            self.binds.append((dst, src))
        if not any(os.path.basename(c).startswith("libssl.so") for c, _ in self.binds):
            raise RuntimeError("tlsguardd --tls-library-copies %s copied no libssl: %s" % (
                self.copydir, text.strip()[-500:]))
        want = {}
        for copy, over in self.binds:
            st = os.stat(copy)
            want[over] = (st.st_dev, st.st_ino)
        ssl = linked_path(self.bin("tls_source"), "libssl.so.3")
        real = {os.path.realpath(k): v for k, v in want.items()}
        if ssl and os.path.realpath(ssl) not in real:
            raise RuntimeError("the loader maps libssl from %s, which tlsguardd did not copy (%s)" % (
                ssl, ", ".join(want)))
        if ssl:
            want[ssl] = real[os.path.realpath(ssl)]
        r = subprocess.run(with_binds(self.binds, ["stat", "-L", "-c", "%d %i"] + list(want)),
                           capture_output=True, text=True, timeout=30)
        seen = [tuple(int(x) for x in line.split()) for line in r.stdout.splitlines()]
        if r.returncode != 0 or seen != list(want.values()):
            raise RuntimeError("the copies bound over %s are not what a process sees there: %s" % (
                ", ".join(want), (r.stderr or r.stdout).strip()[-300:]))
        self.results["tls_libraries"] = {"copies": self.copydir, "binds": self.binds}
        log("TLS libraries: %s" % ", ".join("%s over %s" % b for b in self.binds))

    def guarded(self, fn, cg=None, copies=True):
        """Run fn() with tlsguardd attached to cg (the load cgroup by default);
        copies: see start_daemon()."""
        self.start_daemon(cg or self.cg_load, self.small_senders, copies)
        try:
            before = self.daemon_status()
            r = fn()
            after = self.daemon_status()
        finally:
            self.stop_daemon()
        return r, before, after

    def smtp_source(self, sessions, messages, sender=PLAIN_SENDER, sink=SINK_PLAIN):
        return ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(MSG_LEN),
                "-f", sender, "-t", "rcpt@sink.bench", sink]

    def tls_source(self, sessions, messages, sink=SINK_TLS):
        return [self.bin("tls_source"), "-s", str(sessions), "-m", str(messages), "-n", str(TLS_PER_SESSION),
                "-l", str(MSG_LEN), "-f", PLAIN_SENDER, "-t", "rcpt@sink.bench", sink]

    def setup_sides(self):
        """The three modes of cases 1 and 2, side by side: A (without) and F
        (floor) get cgroups of their own, B (with) the load cgroup; each its
        sinks (SIDE_SINKS) and its own copies of the TLS libraries, the same
        bytes as tlsguardd's (B's): a uprobe sits on a file, so F's null
        uprobes must not trap in B's load, nor B's in A's or F's."""
        if getattr(self, "sides", None):
            return self.sides
        sides = {"B": {"cg": self.cg_load, "sinks": {}}}
        for name, prefix in (("A", "tlsguard-bench-without"), ("F", "tlsguard-bench-floor")):
            cg = self.mkcgroup(prefix)
            d = os.path.join(self.tmp, "tls-copies-%s" % name)
            os.mkdir(d, 0o755)
            binds = []
            for copy, over in self.binds:
                dst = os.path.join(d, os.path.basename(copy))
                shutil.copy2(copy, dst)
                binds.append((dst, over))
            self.cg_binds[cg.path] = binds
            sides[name] = {"cg": cg, "sinks": {}}
        sides["A"]["sinks"] = {"plain": self.sink_plain, "tls": self.sink_tls}
        for name in ("F", "B"):
            plain, tls = SIDE_SINKS[name]
            sides[name]["sinks"] = {"plain": self.start_smtp_sink(plain), "tls": self.start_tls_sink(tls)}
        self.sides = sides
        return sides

    def side_loop(self, name, argv, cg, sink, t_end, out):
        """Run argv in cg again and again until t_end; out[name]: what the runs
        that ended by then did (messages, the span they cover, generator CPU,
        the sink's CPU over that span)."""
        hz = os.sysconf("SC_CLK_TCK")
        t0 = time.monotonic()
        sink0 = proc_cpu_ticks(sink.pid)
        r = {"runs": 0, "span": 0.0, "gen_s": 0.0, "sink_s": 0.0, "error": None}
        out[name] = r
        while time.monotonic() < t_end and not self.side_stop.is_set():
            with tempfile.TemporaryFile() as err:
                p = self.spawn(argv, cg, stdout=subprocess.DEVNULL, stderr=err)
                with self.side_lock:
                    self.side_procs.append(p)
                _, status, ru = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
                now = time.monotonic()
                with self.side_lock:
                    self.side_procs.remove(p)
                if p in self.procs:
                    self.procs.remove(p)
                if now > t_end or self.side_stop.is_set():
                    break  # ended outside the window (or stopped at its end): not counted
                if p.returncode != 0:
                    err.seek(0)
                    r["error"] = "%s exited with %d: %s" % (" ".join(argv), p.returncode,
                                                             err.read().decode(errors="replace").strip()[-300:])
                    break
            r["runs"] += 1
            r["span"] = now - t0
            r["gen_s"] += ru.ru_utime + ru.ru_stime
            r["sink_s"] = (proc_cpu_ticks(sink.pid) - sink0) / hz

    def rate_window(self, kind, s, m):
        """Without, floor and with at once, for WINDOW_S: each mode's load
        (m messages a run) in its own cgroup, to its own sink, again and
        again; null_hooks on F's cgroup and tlsguardd on B's are attached
        for the window. Returns a rate_pair()-like dict."""
        import threading
        sides = self.setup_sides()
        self.wait_quiet()
        self.side_lock, self.side_procs, self.side_stop = threading.Lock(), [], threading.Event()
        out, threads = {}, []

        def stop_loads():
            self.side_stop.set()
            with self.side_lock:
                for p in self.side_procs:
                    try:
                        os.kill(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            for th in threads:
                th.join(30)
        self.start_floor(sides["F"]["cg"])
        try:
            self.start_daemon(sides["B"]["cg"], self.small_senders)
            before = self.daemon_status()
            hz = os.sysconf("SC_CLK_TCK")
            busy0, us0 = cpu_busy_ticks()
            k0, d0, f0 = kthread_cpu_ticks(), proc_cpu_ticks(self.daemon.pid), proc_cpu_ticks(self.floor.pid)
            window = WINDOW_S / 5 if self.args.quick else WINDOW_S
            t_start = time.monotonic()
            t_end = t_start + window
            for name in ("A", "F", "B"):
                sink = sides[name]["sinks"][kind]
                argv = self.smtp_source(s, m, sink=SIDE_SINKS[name][0]) if kind == "plain" else \
                    self.tls_source(s, m, sink=SIDE_SINKS[name][1])
                th = threading.Thread(target=self.side_loop, args=(name, argv, sides[name]["cg"], sink, t_end, out),
                                      daemon=True)
                th.start()
                threads.append(th)
            # at the window's end, the runs still going are stopped: they would
            # run with fewer beside them, and count for nothing
            while time.monotonic() < t_end:
                time.sleep(min(0.05, max(0.0, t_end - time.monotonic())))
            stop_loads()
            elapsed = time.monotonic() - t_start
            busy1, us1 = cpu_busy_ticks()
            kt = kthread_ticks_delta(k0, kthread_cpu_ticks()) / hz
            dt = (proc_cpu_ticks(self.daemon.pid) - d0) / hz
            ft = (proc_cpu_ticks(self.floor.pid) - f0) / hz
            after = self.daemon_status()
        finally:
            stop_loads()
            self.stop_daemon()
            self.stop_floor()
        self.settle([a for pair in SIDE_SINKS.values() for a in pair])
        for name in ("A", "F", "B"):
            if out[name]["error"]:
                raise RuntimeError(out[name]["error"])
            if out[name]["runs"] == 0:
                raise RuntimeError("%s %d sessions: mode %s ended no run of %d messages within %.0f s" % (
                    kind, s, name, m, window))
        own = sum(out[n]["gen_s"] + out[n]["sink_s"] for n in out) + kt + dt + ft
        msgs = {n: out[n]["runs"] * m for n in out}
        res = {"other": max(0.0, ((us1 - us0) / hz - own) / (elapsed * os.cpu_count())),
               "B_flows": after["flows since start"] - before["flows since start"],
               "failed": after.get("flows failed since start", 0), "window_s": window,
               "runs": {n: out[n]["runs"] for n in out}}
        kt_msg = kt / sum(msgs.values()) * 1e6
        for n in ("A", "F", "B"):
            res[n] = msgs[n] / out[n]["span"]
            split = {"generator": out[n]["gen_s"] / msgs[n] * 1e6, "sinks": out[n]["sink_s"] / msgs[n] * 1e6,
                     "tlsguardd": dt / msgs[n] * 1e6 if n == "B" else 0.0, "kthreads": kt_msg}
            res[n + "_cpu_us"] = sum(split.values())
            res[n + "_split"] = split
        return res

    def case_rates(self, kinds):
        """Cases 1 (plain) and 2 (tls): at each concurrency, a window a round in
        which without, floor and with run at once (rate_window())."""
        res = {k: {} for k in kinds}
        for kind in res:
            for s in CONCURRENCY:
                res[kind][s] = {"A": [], "B": [], "A_cpu_us": [], "B_cpu_us": [], "B_flows": [], "other": []}
        self.results["rates"] = res
        rounds = self.args.rounds
        for r in range(rounds):
            for kind in kinds:
                for s in CONCURRENCY:
                    m = self.count(WINDOW_MESSAGES[s])
                    slot = res[kind][s]
                    best = None
                    for attempt in range(NOISY_ATTEMPTS):
                        pair = self.rate_window(kind, s, m)
                        if best is None or pair["other"] < best["other"]:
                            best = pair
                        if pair["other"] <= NOISY_SHARE:
                            break
                        log("round %d %s %d sessions: others used %.0f%% of the CPUs, pair repeated" % (
                            r + 1, kind, s, pair["other"] * 100))
                    for k in ("A", "F", "B", "A_cpu_us", "F_cpu_us", "B_cpu_us", "B_flows", "other", "A_split",
                              "F_split", "B_split", "runs"):
                        slot.setdefault(k, []).append(best[k])
                    slot.setdefault("attempts", []).append(attempt + 1)
                    if best["failed"]:
                        self.results["errors"].append("%s s=%d: %s flows failed" % (kind, s, best["failed"]))
                    log("round %d/%d %s %2d sessions: without %.0f msg/s, floor %.0f msg/s, with %.0f msg/s" % (
                        r + 1, rounds, kind, s, slot["A"][-1], slot["F"][-1], slot["B"][-1]))

    def wait_quiet(self):
        """Wait until other processes leave the CPUs alone (see QUIET_WAIT)."""
        t0 = time.monotonic()
        while True:
            b0, _ = cpu_busy_ticks()
            time.sleep(0.5)
            b1, _ = cpu_busy_ticks()
            share = (b1 - b0) / os.sysconf("SC_CLK_TCK") / 0.5 / os.cpu_count()
            waited = time.monotonic() - t0
            if share <= NOISY_SHARE or waited >= QUIET_WAIT or self.quiet_waited + waited >= QUIET_BUDGET:
                self.quiet_waited += waited
                return share

    def rate_pair(self, argv, m, load_cg=None, guard_cg=None):
        """One run without tlsguardd, one at the floor, then one with it: the
        load in load_cg, the hooks on guard_cg (both the load cgroup by default)."""
        load_cg = load_cg or self.cg_load
        guard_cg = guard_cg or self.cg_load
        self.wait_quiet()
        out = {}
        el, _, _ = self.run_load(argv, load_cg)
        out.update(A=m / el, A_cpu_us=sum(self.last_split.values()) / m * 1e6, other=self.last_other,
                   A_split={k: v / m * 1e6 for k, v in self.last_split.items()})
        self.settle([SINK_PLAIN, SINK_TLS])
        self.wait_quiet()
        el, _, _ = self.floored(lambda: self.run_load(argv, load_cg), guard_cg)
        out.update(F=m / el, F_cpu_us=sum(self.last_split.values()) / m * 1e6,
                   other=max(out["other"], self.last_other))
        self.settle([SINK_PLAIN, SINK_TLS])
        self.wait_quiet()
        (el, _, _), before, after = self.guarded(lambda: self.run_load(argv, load_cg), guard_cg)
        out.update(B=m / el, B_cpu_us=sum(self.last_split.values()) / m * 1e6,
                   other=max(out["other"], self.last_other),
                   B_split={k: v / m * 1e6 for k, v in self.last_split.items()},
                   B_flows=after["flows since start"] - before["flows since start"],
                   failed=after.get("flows failed since start", 0))
        self.settle([SINK_PLAIN, SINK_TLS])
        return out

    def settle(self, addrs, timeout=10.0):
        """Wait until no connection to addrs is left from the last run."""
        deadline = time.monotonic() + timeout
        while tcp_established(addrs) and time.monotonic() < deadline:
            time.sleep(0.05)

    def count(self, n):
        return max(1, n // 10) if self.args.quick else n

    # ---- case 8 -------------------------------------------------------

    def case_outside(self):
        """Cases 1 and 2 at 10 sessions, the load in a cgroup that tlsguardd
        does not guard; tlsguardd (or the null hooks) on another, empty one."""
        outside = self.mkcgroup("tlsguard-bench-outside", bound=False)
        guarded = self.mkcgroup("tlsguard-bench-guarded")
        res = {}
        self.results["outside"] = res
        for r in range(self.args.rounds):
            for kind in ("plain", "tls"):
                m = self.count((PLAIN_MESSAGES if kind == "plain" else TLS_MESSAGES)[OUTSIDE_SESSIONS])
                argv = self.smtp_source(OUTSIDE_SESSIONS, m) if kind == "plain" else \
                    self.tls_source(OUTSIDE_SESSIONS, m)
                pair = self.rate_pair(argv, m, load_cg=outside, guard_cg=guarded)
                # And tlsguardd probing the system's libraries, which the load maps.
                self.wait_quiet()
                (el, _, _), _, _ = self.guarded(lambda: self.run_load(argv, outside), guarded, copies=False)
                pair.update(S=m / el, other=max(pair["other"], self.last_other))
                self.settle([SINK_PLAIN, SINK_TLS])
                slot = res.setdefault(kind, {"messages": m})
                for k in ("A", "F", "B", "S", "B_flows", "other"):
                    slot.setdefault(k, []).append(pair[k])
                log("round %d/%d outside, %s: without %.0f, floor %.0f, with %.0f, with shared libraries "
                    "%.0f msg/s" % (r + 1, self.args.rounds, kind, pair["A"], pair["F"], pair["B"], pair["S"]))

    # ---- case 3 -------------------------------------------------------

    def case_mta(self):
        check_postfix_installed()
        res = {"plain": {"A": [], "F": [], "B": [], "B_flows": [], "sent": [], "tls_conns": []},
               "tls": {"A": [], "F": [], "B": [], "B_flows": [], "sent": [], "tls_conns": []}}
        self.results["mta"] = res
        cg = self.mkcgroup("tlsguard-bench-mta")
        # The queue on tmpfs: an fsync per queue file on this machine's disk would
        # make the run slow and noisy and hide what tlsguard costs.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        root = tempfile.mkdtemp(prefix="tlsguard-bench-pf-", dir=shm)
        self.pf_root = root
        os.chmod(root, 0o755)
        with socket.socket() as s:  # a free port for the instance's own smtpd
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        holdmap = os.path.join(root, "hold_checks")
        with open(holdmap, "w") as f:
            f.write("/^Subject: bench-hold/ HOLD\n")
        self.postfix = BenchPostfix(
            port, root, cg, {"plain.sink": "smtp:[%s]:25" % SINK_PLAIN.split(":")[0],
                             "tls.sink": "smtp:[%s]:25" % SINK_TLS.split(":")[0]},
            extra_main={"header_checks": "regexp:" + holdmap}, binds=self.binds)
        self.postfix.start()
        n = self.count(MTA_MESSAGES)
        for kind in ("plain", "tls"):
            for r in range(self.args.mta_rounds[kind]):
                for mode in ("A", "F", "B"):
                    t, sent, tls_conns, flows = self.mta_run(kind, mode, n, cg, port)
                    res[kind][mode].append(t)
                    res[kind]["sent"].append(sent)
                    res[kind]["tls_conns"].append(tls_conns)
                    if mode == "B":
                        res[kind]["B_flows"].append(flows)
                    log("MTA %s %s: %d messages in %.1f s (%d sent, %d TLS connections)" % (
                        kind, {"A": "without", "F": "floor", "B": "with"}[mode], n, t, sent, tls_conns))
        self.postfix.stop()
        self.postfix = None
        res["messages"] = n

    def mta_run(self, kind, mode, n, cg, port):
        pf = self.postfix
        rcpt = "rcpt@%s.sink" % kind
        # Inject from outside the guarded cgroup, into Postfix's own smtpd.
        argv = ["smtp-source", "-s", "10", "-m", str(n), "-l", str(MSG_LEN), "-S", "bench-hold",
                "-f", PLAIN_SENDER, "-t", rcpt, "127.0.0.1:%d" % port]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError("injection failed: %s" % r.stderr.strip()[-300:])
        deadline = time.monotonic() + 120
        while pf.queue_count(("hold",)) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        if pf.queue_count(("hold",)) != n:
            raise RuntimeError("%d of %d messages on hold" % (pf.queue_count(("hold",)), n))
        self.settle([SINK_PLAIN, SINK_TLS], timeout=30)
        self.wait_quiet()
        logpos = os.path.getsize(pf.maillog) if os.path.exists(pf.maillog) else 0
        flows = None
        if mode == "B":
            self.start_daemon(cg, self.small_senders)
            before = self.daemon_status()
        elif mode == "F":
            self.start_floor(cg)
        try:
            t0 = time.monotonic()
            for cmd in (["/usr/sbin/postsuper", "-c", pf.conf, "-H", "ALL"],
                        ["/usr/sbin/postqueue", "-c", pf.conf, "-f"]):
                subprocess.run(cmd, check=True, capture_output=True, timeout=60)
            deadline = t0 + 900
            while pf.queue_count() and time.monotonic() < deadline:
                time.sleep(0.02)
            t = time.monotonic() - t0
            if pf.queue_count():
                raise RuntimeError("%d messages still queued after 900 s" % pf.queue_count())
            if mode == "B":
                after = self.daemon_status()
                flows = after["flows since start"] - before["flows since start"]
        finally:
            if mode == "B":
                self.stop_daemon()
            self.stop_floor()
        # The log may trail the queue by a moment.
        deadline = time.monotonic() + 10
        while True:
            text = read(pf.maillog)[logpos:]
            sent = text.count("status=sent")
            if sent >= n or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        tls_conns = len(re.findall(r"TLS connection established to", text))
        if sent != n:
            self.results["errors"].append("MTA %s %s: %d of %d sent" % (kind, mode, sent, n))
        return t, sent, tls_conns, flows

    # ---- case 4 -------------------------------------------------------

    def held_run(self, extra, name):
        """held_latency once, or again (up to NOISY_ATTEMPTS) while others load the machine."""
        out = os.path.join(self.tmp, "lat-%s.txt" % name)
        n = self.count(HELD_MESSAGES)
        argv = [self.bin("held_latency"), "-m", str(n), "-o", out] + extra + [SINK_PLAIN]
        best = None
        for attempt in range(NOISY_ATTEMPTS):
            self.wait_quiet()
            self.run_load(argv, self.cg_load)
            with open(out) as f:
                lat = sorted(int(x) / 1000.0 for x in f)
            r = {"n": len(lat), "p50": percentile(lat, 0.5), "p90": percentile(lat, 0.9),
                 "p99": percentile(lat, 0.99), "p999": percentile(lat, 0.999), "max": lat[-1],
                 "mean": sum(lat) / len(lat), "other": self.last_other, "attempts": attempt + 1}
            if best is None or r["other"] < best["other"]:
                best = r
            if r["other"] <= NOISY_SHARE:
                break
            log("latency %s: others used %.0f%% of the CPUs, run repeated" % (name, r["other"] * 100))
        best["attempts"] = attempt + 1
        return best

    def case_latency(self):
        res = {}
        self.results["latency"] = res
        res["pass_without"] = self.held_run(["-k", "0", "-e", "250", "-f", PLAIN_SENDER], "pass-without")

        def guarded_runs():
            res["held_reuse"] = self.held_run(["-k", "0"], "held-reuse")
            res["held_new"] = self.held_run(["-k", "1"], "held-new")
            res["pass_with"] = self.held_run(["-k", "0", "-e", "250", "-f", PLAIN_SENDER], "pass-with")
        _, before, after = self.guarded(guarded_runs)
        res["held_counted"] = after["messages held"] - before["messages held"]
        for k in ("pass_without", "held_reuse", "held_new", "pass_with"):
            v = res[k]
            log("latency %-12s p50 %.0f us, p99 %.0f us, max %.0f us" % (k, v["p50"], v["p99"], v["max"]))

    # ---- case 9 -------------------------------------------------------

    def case_audit(self):
        """Case 9: the audit trail on (--audit FILE on the machine's own disk,
        under /var/tmp, never tmpfs: the point is the cost of a flush to
        disk). Per round, tlsguardd without the audit and then with it, and
        each time: the held verdict latency of case 4 (one connection), the
        plaintext load of case 1 at 10 sessions, then the held run again
        while a plaintext load runs beside it (every message of the load
        ends in an audit record, so its flushes compete with the verdicts
        on the agent's loop)."""
        res = {"rounds": [], "fstype": None}
        self.results["audit"] = res
        audit_dir = tempfile.mkdtemp(prefix="tlsguard-bench-audit-", dir="/var/tmp")
        mounts = [l.split() for l in read("/proc/mounts").splitlines()]
        res["fstype"] = max(((m[1], m[2]) for m in mounts if audit_dir.startswith(m[1].rstrip("/") + "/")),
                            key=lambda m: len(m[0]))[1]
        m_plain = self.count(PLAIN_MESSAGES[OUTSIDE_SESSIONS])
        n_mixed = self.count(HELD_MESSAGES) // 2
        res.update(held_messages=self.count(HELD_MESSAGES), plain_messages=m_plain, mixed_messages=n_mixed)
        orig_spawn = self.spawn

        def held_under_load(name):
            out = os.path.join(self.tmp, "lat-%s.txt" % name)
            self.wait_quiet()
            # A load long enough to outlast the held run; stopped (by pid) when it ends.
            load = self.spawn(self.smtp_source(OUTSIDE_SESSIONS, 50 * m_plain), self.cg_load,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            try:
                self.run_load([self.bin("held_latency"), "-m", str(n_mixed), "-k", "0", "-o", out, SINK_PLAIN],
                              self.cg_load)
                load_ran = load.poll() is None
            except RuntimeError as e:
                # A held connection lost under load is a result, not a broken case.
                warn = [l for l in read(self.daemon_log).splitlines() if "warning" in l][-3:]
                return {"n": 0, "p50": None, "p99": None, "error": "%s; tlsguardd: %s" % (e, " | ".join(warn))}
            finally:
                self.reap(load)
                self.settle([SINK_PLAIN])
            with open(out) as f:
                lat = sorted(int(x) / 1000.0 for x in f)
            return {"n": len(lat), "p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99), "max": lat[-1],
                    "load_outlasted": load_ran}

        try:
            for r in range(self.args.rounds):
                for mode in ("off", "on"):
                    path = os.path.join(audit_dir, "audit-%d-%s.json" % (r, mode))

                    def spawn(argv, cg=None, **kw):
                        # start_daemon()'s tlsguardd, with --audit FILE when on
                        if mode == "on" and argv and argv[0] == self.args.tlsguardd:
                            argv = argv + ["--audit", path]
                        return orig_spawn(argv, cg, **kw)

                    def lines_settled():
                        # The agent may still be reading its ring buffer: until the file stops growing.
                        n, t_end = -1, time.monotonic() + 30
                        while time.monotonic() < t_end:
                            now = read(path).count("\n")
                            if now == n:
                                return n
                            n = now
                            time.sleep(1.0)
                        return n

                    def runs():
                        out = {"held": self.held_run(["-k", "0"], "audit-%s-held" % mode)}
                        self.settle([SINK_PLAIN])
                        n0 = lines_settled() if mode == "on" else 0
                        self.wait_quiet()
                        el, _, _ = self.run_load(self.smtp_source(OUTSIDE_SESSIONS, m_plain), self.cg_load)
                        out["plain"] = m_plain / el
                        out["plain_other"] = self.last_other
                        self.settle([SINK_PLAIN])
                        # Records of the plaintext load: fewer than its messages when the agent fell
                        # so far behind that the kernel's ring buffer overflowed.
                        out["plain_records"] = lines_settled() - n0 if mode == "on" else None
                        out["mixed"] = held_under_load("audit-%s-mixed" % mode)
                        # The agent's memory after some 30,000 flows (audited or not).
                        out["hwm_kb"] = proc_status_kb(self.daemon.pid, "VmHWM")
                        return out

                    self.spawn = spawn
                    try:
                        out, _, _ = self.guarded(runs)
                    finally:
                        del self.spawn  # the method again
                    out["mode"] = mode
                    out["records"] = read(path).count("\n") if mode == "on" else None
                    if mode == "on":
                        os.unlink(path)
                    res["rounds"].append(out)
                    log("round %d/%d audit %-3s: held p50 %.0f p99 %.0f us; plain %.0f msg/s (%s records); held "
                        "under load p50 %s p99 %s us%s%s" % (
                            r + 1, self.args.rounds, mode, out["held"]["p50"], out["held"]["p99"], out["plain"],
                            fmt(out["plain_records"]), fmt(out["mixed"]["p50"]), fmt(out["mixed"]["p99"]),
                            "; %d records" % out["records"] if out["records"] is not None else "",
                            "; " + out["mixed"]["error"] if out["mixed"].get("error") else ""))
        finally:
            shutil.rmtree(audit_dir, ignore_errors=True)

    # ---- case 5 -------------------------------------------------------

    def case_policy(self):
        n = self.count(POLICY_SENDERS)
        big = os.path.join(self.tmp, "senders-1m")
        t0 = time.monotonic()
        with open(big, "w") as f:
            f.write("# tlsguard bench: %d guaranteed senders\n%s\n" % (n, GUARANTEED))
            f.write("".join("s%07d@d%05d.example\n" % (i, i % 50000) for i in range(n - 1)))
        res = {"senders": n, "file_bytes": os.path.getsize(big), "gen_s": time.monotonic() - t0,
               "small": [], "big": []}
        self.results["policy"] = res
        with BpfStats() as st:
            res["stats_how"] = st.how
            for r in range(self.args.policy_rounds):
                for size, path in (("small", self.small_senders), ("big", big)):
                    res[size].append(self.policy_round(size, path))
                    v = res[size][-1]
                    log("policy %s: start %.2f s, tg_senders %.1f MiB, RSS %.1f MiB, held p99 %.0f us, "
                        "plain %.0f msg/s" % (size, v["start_s"], v["maps"]["tg_senders"]["memlock"] / 2**20,
                                              v["rss_kb"] / 1024, v["held"]["p99"], v["plain_rate"]))

    def policy_round(self, size, path):
        slab0, vmalloc0 = slab_bytes()[0], meminfo_kb("VmallocUsed")
        out = {"start_s": self.start_daemon(self.cg_load, path)}
        try:
            pid = self.daemon.pid
            out["slab_growth"] = slab_bytes()[0] - slab0
            out["vmalloc_growth"] = (meminfo_kb("VmallocUsed") - vmalloc0) * 1024
            out["status_senders"] = self.daemon_status().get("senders")
            out["maps"] = daemon_maps(pid)
            out["rss_kb"] = proc_status_kb(pid, "VmRSS")
            p0 = daemon_progs(pid)
            out["held"] = self.held_run(["-k", "0"], "policy-%s" % size)
            p1 = daemon_progs(pid)
            m = self.count(PLAIN_MESSAGES[10])
            self.wait_quiet()
            el, _, _ = self.run_load(self.smtp_source(10, m), self.cg_load)
            p2 = daemon_progs(pid)
            self.settle([SINK_PLAIN])
            out["plain_rate"] = m / el
            out["progs_held"] = prog_delta(p0, p1)
            out["progs_plain"] = prog_delta(p1, p2)
            if size == "big":
                pos = os.path.getsize(self.daemon_log)
                t0 = time.monotonic()
                os.kill(pid, signal.SIGHUP)
                while "reloaded" not in read(self.daemon_log)[pos:] and time.monotonic() - t0 < 120:
                    time.sleep(0.005)
                out["reload_s"] = time.monotonic() - t0
                ctl_status(self.daemon_sock)
                out["rss_after_reload_kb"] = proc_status_kb(pid, "VmRSS")
            out["sender_add_ms"] = self.sender_add_times(SENDER_ADDS)
            out["hwm_kb"] = proc_status_kb(pid, "VmHWM")
            # The tlsguardctl binary itself, once: the contract the start time is measured by.
            r = subprocess.run([self.args.tlsguardctl, "--socket", self.daemon_sock, "status"],
                               capture_output=True, text=True, timeout=30)
            out["tlsguardctl_rc"] = r.returncode
        finally:
            self.stop_daemon()
        return out

    def sender_add_times(self, n):
        """Milliseconds of each of n `sender add` requests on the control socket (what tlsguardctl sends),
        new senders one after the other; the senders file grows by n lines."""
        times = []
        for i in range(n):
            t0 = time.monotonic()
            reply = ctl_request(self.daemon_sock, "sender add added%05d@bench-add.example" % i, 30)
            times.append((time.monotonic() - t0) * 1000)
            if not reply.startswith("ok"):
                raise RuntimeError("sender add: %r" % reply[:200])
        return times

    # ---- case 7 -------------------------------------------------------

    def case_pgsql(self):
        from pgsql_env import PostgresCluster
        n = self.count(POLICY_SENDERS)
        res = {"senders": n}
        self.results["pgsql"] = res
        pg = PostgresCluster(os.path.join(self.tmp, "pg"))
        os.makedirs(pg.root)
        try:
            pg.start()
            pg.create_db(os.path.join(REPO, "dist", "pgsql", "schema.sql"), "bench")
            t0 = time.monotonic()
            # The rows as the trigger would write them, without a trigger call each.
            pg.sql("ALTER TABLE tlsguard.senders DISABLE TRIGGER senders_changed;"
                   "INSERT INTO tlsguard.senders (sender) SELECT format('s%%s@d%%s.example', i, i %% 50000) "
                   "FROM generate_series(1, %d) i;"
                   "INSERT INTO tlsguard.sender_changes (sender, kind, live, seq) "
                   "SELECT lower(sender), kind, true, nextval('tlsguard.sender_seq') FROM tlsguard.senders;"
                   "ALTER TABLE tlsguard.senders ENABLE TRIGGER senders_changed;"
                   "INSERT INTO tlsguard.senders (sender) VALUES ('%s');"
                   "VACUUM ANALYZE tlsguard.sender_changes" % (n - 1, GUARANTEED), timeout=1200)
            res["load_s"] = time.monotonic() - t0
            snap = os.path.join(self.tmp, "senders.snapshot")
            cf = os.path.join(self.tmp, "pgsql.cf")
            with open(cf, "w") as f:
                f.write("conninfo = %s\nsnapshot = %s\n" % (pg.conninfo("bench"), snap))
            os.chmod(cf, 0o600)
            res["start_s"] = self.start_daemon(self.cg_load, "pgsql:" + cf)
            try:
                pid = self.daemon.pid
                st = json.loads(ctl_request(self.daemon_sock, "status json", 30).split("\n", 1)[1])["policy"]
                res["sync_s"] = st.get("last_sync_seconds")
                res["entries"] = st.get("entries")
                res["rss_kb"] = proc_status_kb(pid, "VmRSS")
                addr = "live0@bench-live.example"
                t0 = time.monotonic()
                pg.sql("INSERT INTO tlsguard.senders (sender) VALUES ('%s')" % addr)
                t1 = time.monotonic()
                while time.monotonic() - t1 < 10:
                    if ": guaranteed" in ctl_request(self.daemon_sock, "sender check " + addr, 30):
                        break
                    time.sleep(0.002)
                res["live_ms"] = (time.monotonic() - t1) * 1000
                res["hwm_kb"] = proc_status_kb(pid, "VmHWM")
                # A reload: a sync by sequence number.
                t1 = time.monotonic()
                reply = ctl_request(self.daemon_sock, "reload", 120)
                res["reload_s"] = time.monotonic() - t1
                res["reload_ok"] = reply.startswith("ok")
                res["reload_hwm_kb"] = proc_status_kb(pid, "VmHWM")
                # A new database identity: every row read again into a second policy, then swapped.
                pg.sql("UPDATE tlsguard.source SET id = gen_random_uuid()")
                t1 = time.monotonic()
                reply = ctl_request(self.daemon_sock, "reload", 120)
                res["full_s"] = time.monotonic() - t1
                res["full_ok"] = reply.startswith("ok")
                res["full_hwm_kb"] = proc_status_kb(pid, "VmHWM")
            finally:
                self.stop_daemon()
            pg.stop()
            res["snapshot_bytes"] = os.path.getsize(snap)
            res["snapshot_start_s"] = self.start_daemon(self.cg_load, "pgsql:" + cf)
            try:
                res["snapshot_hwm_kb"] = proc_status_kb(self.daemon.pid, "VmHWM")
                st = json.loads(ctl_request(self.daemon_sock, "status json", 30).split("\n", 1)[1])["policy"]
                res["snapshot_entries"] = st.get("entries")
                res["snapshot_from"] = st.get("from")
            finally:
                self.stop_daemon()
        finally:
            pg.stop()
        log("pgsql: %s rows, first sync %.2f s (start %.2f s), VmHWM %.1f MiB, live change %.0f ms, "
            "snapshot start %.2f s" % ("{:,}".format(n), res.get("sync_s") or -1, res["start_s"],
                                       res["hwm_kb"] / 1024, res["live_ms"], res["snapshot_start_s"]))

    # ---- case 6 -------------------------------------------------------

    def case_flows(self):
        n = self.count(FLOWS)
        sink = self.spawn([self.bin("flow_hold"), "sink"] + HOLD_SINKS, stdout=subprocess.PIPE, text=True,
                          start_new_session=True)
        if sink.stdout.readline().strip() != "listening":
            raise RuntimeError("flow_hold sink did not start")
        res = {"flows": n, "A": [], "B": []}
        self.results["flows"] = res
        try:
            for r in range(2):
                res["A"].append(self.flows_run(n, None))
                self.start_daemon(self.cg_load, self.small_senders)
                try:
                    res["B"].append(self.flows_run(n, self.daemon.pid))
                finally:
                    self.stop_daemon()
                log("flows: %d open in %.2f s without, %.2f s with; slab +%.0f / +%.0f bytes per flow; "
                    "RSS %s -> %s kB" % (n, res["A"][-1]["open_s"], res["B"][-1]["open_s"],
                                         res["A"][-1]["slab_per_flow"], res["B"][-1]["slab_per_flow"],
                                         res["B"][-1]["rss_before_kb"], res["B"][-1]["rss_after_kb"]))
        finally:
            self.reap(sink)
        res["btf"] = btf_struct_sizes({"sk_psock", "sk_psock_link", "bpf_shtab_elem"})

    def flows_run(self, n, dpid):
        out = {}
        self.settle(HOLD_SINKS)
        if dpid:
            out["rss_before_kb"] = proc_status_kb(dpid, "VmRSS")
            out["maps_before"] = daemon_maps(dpid)
        slab0 = slab_bytes()
        p = self.spawn([self.bin("flow_hold"), "open", "-n", str(n)] + HOLD_SINKS, self.cg_load,
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline().strip()
            m = re.match(r"open=(\d+) elapsed_s=([\d.]+)", line)
            if not m:
                raise RuntimeError("flow_hold open: %r" % line)
            out["open_s"] = float(m.group(2))
            time.sleep(0.5)  # let the agent and the kernel settle
            out["established"] = tcp_established(HOLD_SINKS)
            slab1 = slab_bytes()
            out["slab_per_flow"] = (slab1[0] - slab0[0]) / n
            out["kmalloc_per_flow"] = (slab1[1] - slab0[1]) / n
            if dpid:
                t0 = time.monotonic()
                st = self.daemon_status()
                out["status_s"] = time.monotonic() - t0
                out["tracked"] = st.get("flows tracked")
                out["failed"] = st.get("flows failed")
                out["rss_after_kb"] = proc_status_kb(dpid, "VmRSS")
                out["maps_after"] = daemon_maps(dpid)
        finally:
            p.stdin.close()
            rest = p.stdout.read()
            p.wait(60)
            self.procs.remove(p)
        m = re.search(r"closed elapsed_s=([\d.]+)", rest)
        out["close_s"] = float(m.group(1)) if m else None
        self.settle(HOLD_SINKS)
        return out

    # ---- profile ------------------------------------------------------

    def case_profile(self):
        """Where the time goes in the costliest cases: BPF run time per program, perf samples."""
        res = {}
        self.results["profile"] = res
        configs = [("plain", 10), ("plain", 50), ("tls", 10)]
        with BpfStats() as st:
            res["stats_how"] = st.how
            self.start_daemon(self.cg_load, self.small_senders)
            try:
                for kind, s in configs:
                    m = self.count(PLAIN_MESSAGES[s] if kind == "plain" else TLS_MESSAGES[s])
                    argv = self.smtp_source(s, m) if kind == "plain" else self.tls_source(s, m)
                    p0 = daemon_progs(self.daemon.pid)
                    el, busy, _ = self.run_load(argv, self.cg_load)
                    p1 = daemon_progs(self.daemon.pid)
                    self.settle([SINK_PLAIN, SINK_TLS])
                    res["%s-%d" % (kind, s)] = {"messages": m, "elapsed": el, "cpu_s": busy,
                                                "progs": prog_delta(p0, p1)}
            finally:
                self.stop_daemon()
        self.uprobes_only(res)
        if shutil.which("perf"):
            m = self.count(PLAIN_MESSAGES[50])
            res["perf"] = {}
            for mode in ("A", "B"):
                mine = {0: "idle"}
                for sp in self.sinks:
                    mine[sp.pid] = os.path.basename(sp.args[0])
                if mode == "B":
                    self.start_daemon(self.cg_load, self.small_senders)
                    mine[self.daemon.pid] = "tlsguardd"
                try:
                    data = os.path.join(self.tmp, "perf-%s.data" % mode)
                    argv = ["perf", "record", "-a", "-F", "1999", "-q", "-o", data, "--"] + \
                        self.in_load(self.cg_load, self.smtp_source(50, m))
                    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
                    if r.returncode != 0:
                        res["perf"][mode] = {"error": r.stderr.strip()[-300:]}
                        continue
                finally:
                    if mode == "B":
                        self.stop_daemon()
                self.settle([SINK_PLAIN])
                rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "-q",
                                      "--sort", "pid,sym", "--percent-limit", "0"],
                                     capture_output=True, text=True, timeout=300)
                rows = []
                for line in rep.stdout.splitlines():
                    mm = re.match(r"\s*([\d.]+)%\s+(\d+):(\S+)\s+\[(.)\]\s+(.*\S)", line)
                    if not mm:
                        continue
                    pid, comm = int(mm.group(2)), mm.group(3)
                    # The load generator is whatever ran smtp-source in our cgroup's shell.
                    who = mine.get(pid) or ("smtp-source" if comm == "smtp-source" else
                                            "kernel threads" if re.match(r"(kworker|ksoftirqd)", comm) else
                                            "other processes")
                    if float(mm.group(1)) >= 0.02:  # keep results.json readable
                        rows.append((float(mm.group(1)), who, mm.group(5)))
                res["perf"][mode] = {"rows": rows}

    def uprobes_only(self, res):
        """TLS at 10 sessions: without tlsguardd; with tlsguardd attached to an
        empty cgroup (its uprobes on libssl fire in every process, but no flow
        of the load is tracked); with tlsguardd on the load's cgroup."""
        empty = self.mkcgroup("tlsguard-bench-empty")
        m = self.count(TLS_MESSAGES[10])
        argv = self.tls_source(10, m)
        out = {"messages": m, "A": [], "U": [], "B": [], "U_flows": []}
        res["uprobes_only"] = out
        for r in range(3 if not self.args.quick else 1):
            for mode, cg in (("A", None), ("U", empty), ("B", self.cg_load)):
                self.wait_quiet()
                if cg is not None:
                    self.start_daemon(cg, self.small_senders)
                try:
                    before = self.daemon_status() if cg is not None else None
                    el, _, _ = self.run_load(argv, self.cg_load)
                    if mode == "U":
                        out["U_flows"].append(self.daemon_status()["flows since start"] -
                                              before["flows since start"])
                finally:
                    self.stop_daemon()
                self.settle([SINK_TLS])
                out[mode].append(dict({"rate": m / el, "other": self.last_other},
                                      **{k: v / m * 1e6 for k, v in self.last_split.items()}))
            log("TLS 10 sessions: without %.0f, uprobes only %.0f, with %.0f msg/s" % (
                out["A"][-1]["rate"], out["U"][-1]["rate"], out["B"][-1]["rate"]))

    # ---- teardown -----------------------------------------------------

    def cleanup(self):
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        try:
            self.stop_daemon()
        except Exception as e:  # noqa: BLE001 - cleanup goes on
            log("cleanup: tlsguardd: %s" % e)
        if self.postfix is not None:
            try:
                self.postfix.stop()
            except Exception as e:  # noqa: BLE001
                log("cleanup: postfix: %s" % e)
        for p in list(self.procs):
            self.reap(p, timeout=5)
        try:
            self.detach()  # also after a tlsguardd that died on its own
        except Exception as e:  # noqa: BLE001
            log("cleanup: detach: %s" % e)
        for cg in self.cgroups:
            # Only processes this run started are in these cgroups.
            for pid in cg.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                cg.remove(timeout=10)
            except Exception as e:  # noqa: BLE001
                log("cleanup: %s" % e)
        if not self.args.keep:
            for d in (self.tmp, self.pf_root):
                if d:
                    shutil.rmtree(d, ignore_errors=True)


class BenchPostfix(PostfixInstance):
    """postfix_env's private instance, plus an smtpd on 127.0.0.1:PORT to inject through."""

    def __init__(self, port, *a, **kw):
        super().__init__(*a, **kw)
        self.smtpd_port = port

    def write_config(self):
        super().write_config()
        with open(os.path.join(self.conf, "master.cf"), "a") as f:
            f.write("127.0.0.1:%d inet  n       -       n       -       -       smtpd\n" % self.smtpd_port)

    def queue_count(self, queues=("maildrop", "incoming", "active", "deferred", "hold")):
        n = 0
        for q in queues:
            for _, _, files in os.walk(os.path.join(self.queue, q)):
                n += len(files)
        return n


# ------------------------------------------------------------ report

def fmt(x, spec="%.0f"):
    return "–" if x is None else spec % x


def met(ok):
    if ok == "floor":
        return "**met at the floor**"
    return "**met**" if ok else "**missed**"


def ratio_verdict(ratio, floor_ratio, target):
    """True when ratio reaches target; "floor" when it does not but tlsguard
    is within TARGET_RATIO of the floor (with / floor), the kernel mechanism
    itself being what misses it; False otherwise."""
    if ratio is not None and ratio >= target:
        return True
    if ratio is not None and floor_ratio is not None and floor_ratio >= TARGET_RATIO:
        return "floor"
    return False


def ratio_cell(ratio, floor_ratio):
    return "%s (floor %s)" % (fmt(ratio, "%.3f"), fmt(floor_ratio, "%.3f")) if floor_ratio is not None \
        else fmt(ratio, "%.3f")


def write_report(res, out_dir, elapsed_s):
    lines = []
    w = lines.append
    mach = res["machine"]
    targets = []
    w("# tlsguard benchmarks")
    w("")
    w("Written by `make bench` (bench/run.py) on %s; the whole run took %.1f min." % (mach["date"], elapsed_s / 60))
    w("Raw samples: [results.json](results.json); plot: [throughput.png](throughput.png).")
    w("")
    w("| machine | |")
    w("| --- | --- |")
    for k, label in (("nproc", "CPUs (nproc)"), ("cpu", "CPU model"), ("memory_gib", "memory (GiB)"),
                     ("kernel", "kernel"), ("debian", "Debian"), ("postfix", "Postfix"), ("openssl", "OpenSSL"),
                     ("commit", "tlsguard commit")):
        w("| %s | %s |" % (label, mach.get(k)))
    w("")
    w("The machine was shared with other work: before each measurement the run waited (up to %.0f s, %.0f s "
      "in all) for the CPUs to be idle but for itself, and waited %.0f s in all; each table says how much CPU "
      "others still used." % (QUIET_WAIT, QUIET_BUDGET, res.get("quiet_waited_s", 0)))
    w("")
    w("\"without\" = no program on the load's cgroup; \"with\" = tlsguardd attached to the cgroup the load "
      "runs in, started before and stopped after each \"with\" run; \"floor\" = bench/null_hooks instead "
      "(below). Cases 1 and 2 run the three side by side, at the same time (each its own cgroup, sinks and "
      "copies of the TLS libraries), so that the machine's speed, which drifts by 10% and more from one "
      "second to the next on this shared machine, is the same for all three; their ratios are the medians "
      "of each window's own. The other cases alternate without, with, without, with ... and give the "
      "medians' ratios. Figures are medians; ratio = with / without (throughput). Load generators and "
      "sinks share the machine's CPUs.")
    w("")
    tl = res.get("tls_libraries")
    if tl:
        w("TLS libraries as a mail host sets them up: tlsguardd runs with `tls_library_copies = %s` (a "
          "directory of the run's own, root's, mode 0755): it copies the system's TLS libraries there and "
          "puts its uprobes on the copies, never on the system's files. Every process that runs in a "
          "guarded cgroup (the load generators of cases 1, 2, 4, 5 and 6, the profile's loads, case 3's Postfix) "
          "runs in a private mount namespace with the copies bound over the system's files (%s), in every "
          "mode: without, floor and with differ only by what is attached. The sinks, outside, map the "
          "system's files: a uprobe traps only in the processes that map the copies." % (
              tl["copies"], "; ".join("`%s` over `%s`" % (os.path.basename(c), o) for c, o in tl["binds"])))
        w("")
    cfg = res["config"]
    if res["errors"]:
        w("**Problems during the run:**")
        w("")
        for e in res["errors"]:
            w("- %s" % e)
        w("")

    summary_at = len(lines)

    # 1 and 2
    rates = res.get("rates")
    for kind, num, title in (("plain", 1, "Raw flow rate, plaintext"), ("tls", 2, "TLS flows")):
        w("## %d. %s" % (num, title))
        w("")
        win = cfg.get("window_s", WINDOW_S)
        if kind == "plain":
            w("`smtp-source -s N -m M -l %d` (one message per connection, a sender nobody guarantees) in the "
              "mode's cgroup → `smtp-sink` (without %s, floor %s, with %s); %d rounds." % (
                  MSG_LEN, SIDE_SINKS["A"][0], SIDE_SINKS["F"][0], SIDE_SINKS["B"][0], cfg["rounds"]))
        else:
            w("`bench/tls_source -s N -m M -n %d -l %d` (connect, EHLO, STARTTLS, TLS 1.3 handshake, %d "
              "messages, QUIT) in the mode's cgroup, with its copies of the TLS libraries bound over "
              "the system's (with: tlsguardd's, whose libssl calls trap on its uprobes; floor: a copy of "
              "those on which null_hooks puts its uprobes; without: another copy) → `bench/tls_sink` "
              "(without %s, floor %s, with %s; outside, the system's libssl: no uprobe; ECDSA P-256 "
              "certificate made at bench time); %d rounds." % (
                  TLS_PER_SESSION, MSG_LEN, TLS_PER_SESSION, SIDE_SINKS["A"][1], SIDE_SINKS["F"][1],
                  SIDE_SINKS["B"][1], cfg["rounds"]))
        w("")
        w("A round is a window of %.0f s in which the three modes run at once, each its load again and again "
          "(M messages a run); the runs that end within the window count, the rate is their messages over "
          "the time they took, and whatever still runs at the window's end is stopped (it would run with "
          "fewer beside it). tlsguardd and null_hooks are attached before each window and detached after it. "
          "Three modes on 2 CPUs: each gets about a third of the machine, so the rates are a third of a mode "
          "run alone; their ratios are what counts." % win)
        w("")
        if not rates or kind not in rates:
            w("Not run.")
            w("")
            continue
        w("| sessions | messages/run | without (msg/s) | floor (msg/s) | with (msg/s) | ratio | floor / without "
          "| with / floor | target ≥ %.2f | CPU µs/msg without | CPU µs/msg floor | CPU µs/msg with | "
          "with / floor by CPU | flows tracked/window | others' CPU |" % TARGET_RATIO)
        w("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for s in CONCURRENCY:
            d = rates[kind][s]
            a, f, b = median(d["A"]), median(d.get("F") or []), median(d["B"])

            def paired(xs, ys):
                """the median of each window's own ratio (runs of older results: of the medians)"""
                if not xs or not ys:
                    return None
                if not cfg.get("side_by_side"):
                    return median(ys) / median(xs) if median(xs) else None
                return median([y / x for x, y in zip(xs, ys) if x])
            ratio = paired(d["A"], d["B"])
            fr = paired(d.get("F") or [], d["B"])
            fa = paired(d["A"], d.get("F") or [])
            ok = ratio_verdict(ratio, fr, TARGET_RATIO)
            targets.append(("ratio ≥ %.2f: %s, %d session%s" % (TARGET_RATIO, title.lower(), s, "s" if s > 1 else ""),
                            ratio_cell(ratio, fr), ok))
            msgs = (cfg.get("window_messages") or PLAIN_MESSAGES if kind == "plain" else
                    cfg.get("window_messages") or TLS_MESSAGES)
            msgs = msgs.get(s, msgs.get(str(s)))
            if cfg.get("quick"):
                msgs = max(1, msgs // 10)
            fc, bc = median(d.get("F_cpu_us") or []), median(d["B_cpu_us"])
            w("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                s, msgs, fmt(a), fmt(f), fmt(b), fmt(ratio, "%.3f"), fmt(fa, "%.3f"),
                fmt(fr, "%.3f"), met(ok), fmt(median(d["A_cpu_us"])), fmt(fc), fmt(bc),
                fmt(fc / bc if fc and bc else None, "%.3f"), fmt(median(d["B_flows"])),
                fmt(max(d["other"]) * 100 if d.get("other") else None, "≤ %.0f%%")))
        w("")
        w("With / floor by CPU is the floor's CPU µs/msg over tlsguard's: the load generator and the sink "
          "keep this machine's CPUs busy, so the rate follows the CPU a message costs; taken from each run's "
          "CPU time rather than its wall clock, it varies less from run to run than the rates do. The "
          "targets are judged on the rates.")
        w("")
        w("Every window (msg/s):" if cfg.get("side_by_side") else "Every run (msg/s):")
        w("")
        for s in CONCURRENCY:
            d = rates[kind][s]
            w("- %d session%s: without %s; floor %s; with %s" % (
                s, "s" if s > 1 else "", ", ".join("%.0f" % x for x in d["A"]),
                ", ".join("%.0f" % x for x in d.get("F", [])), ", ".join("%.0f" % x for x in d["B"])))
        w("")
        w("Where the CPU goes, µs per message (medians; process CPU time, 10 ms ticks; the kernel's work "
          "on loopback, the receiver's BPF programs included, is mostly charged to the process that sends):")
        w("")
        w("| sessions | load generator without → with | sink without → with | kernel threads without → with | "
          "tlsguardd |")
        w("| ---: | ---: | ---: | ---: | ---: |")
        for s in CONCURRENCY:
            d = rates[kind][s]
            if not d.get("A_split"):
                continue

            def ms(runs, key):
                return median([r[key] for r in runs])
            w("| %d | %.0f → %.0f | %.0f → %.0f | %.0f → %.0f | %.0f |" % (
                s, ms(d["A_split"], "generator"), ms(d["B_split"], "generator"), ms(d["A_split"], "sinks"),
                ms(d["B_split"], "sinks"), ms(d["A_split"], "kthreads"), ms(d["B_split"], "kthreads"),
                ms(d["B_split"], "tlsguardd")))
        w("")
        w("CPU µs/msg is the CPU time of the mode's processes over its counted runs (load generator, sink, "
          "tlsguardd; user + system, 10 ms ticks) divided by their messages, plus the kernel threads' CPU "
          "over the window divided by all three modes' messages (it cannot be told apart by mode); the "
          "kernel's work on loopback is charged to the processes. \"others' CPU\" is the largest "
          "share of the machine's CPU that processes not of this benchmark used during any of these windows "
          "(the machine is shared): a window with more than %.0f%% was run again, up to %d times, and "
          "the quietest attempt kept (attempts: %s)." % (NOISY_SHARE * 100, NOISY_ATTEMPTS, "; ".join(
              "%d: %s" % (s, ",".join(str(a) for a in rates[kind][s].get("attempts", []))) for s in CONCURRENCY)))
        w("")

    # 3
    w("## 3. Whole MTA")
    w("")
    mta = res.get("mta")
    if not mta:
        w("Not run.")
        w("")
    else:
        n = mta.get("messages", MTA_MESSAGES)
        w("A private Postfix (tests/e2e/fixtures/postfix_env.py, defaults but for its test settings) in its own "
          "cgroup, started in a mount namespace of its own with tlsguardd's copies of the TLS libraries bound "
          "over the system's (as a mail host starts its MTA with tls_library_copies; for all three modes). "
          "%d messages (payload %d bytes, one recipient, a sender nobody guarantees) are injected through the "
          "instance's own smtpd on 127.0.0.1 (not timed; a header check puts them on hold), then released "
          "(`postsuper -H ALL; postqueue -f`); the time is from the release until the queue is empty, all "
          "delivered (`status=sent` counted in the log). Plaintext: to smtp-sink on %s (no STARTTLS); TLS: to "
          "tls_sink on %s, `smtp_tls_security_level = may`, one TLS session per message (Postfix does not "
          "reuse TLS connections without tlsproxy). The instance's queue is on tmpfs (/dev/shm): an fsync per queue "
          "file on this machine's disk would only add noise." % (
              n, MSG_LEN, SINK_PLAIN, SINK_TLS))
        w("")
        w("| delivery | rounds | without (s) | floor (s) | with (s) | without (msg/s) | with (msg/s) | ratio | "
          "with / floor | target ≥ %.2f | TLS connections/run | flows tracked/run |" % TARGET_RATIO)
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
        for kind in ("plain", "tls"):
            d = mta[kind]
            a, f, b = median(d["A"]), median(d.get("F") or []), median(d["B"])
            ratio = a / b if a and b else None
            fr = f / b if f and b else None
            ok = ratio_verdict(ratio, fr, TARGET_RATIO)
            targets.append(("ratio ≥ %.2f: whole MTA, %s" % (TARGET_RATIO, "plaintext" if kind == "plain" else "TLS"),
                            ratio_cell(ratio, fr), ok))
            w("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                "plaintext" if kind == "plain" else "TLS", len(d["A"]), fmt(a, "%.1f"), fmt(f, "%.1f"),
                fmt(b, "%.1f"), fmt(n / a if a else None), fmt(n / b if b else None), fmt(ratio, "%.3f"),
                fmt(fr, "%.3f"), met(ok), fmt(median(d["tls_conns"])), fmt(median(d["B_flows"]))))
        w("")
        w("Every run (s): " + "; ".join("%s without %s, floor %s, with %s" % (
            k, ", ".join("%.1f" % x for x in mta[k]["A"]), ", ".join("%.1f" % x for x in mta[k].get("F", [])),
            ", ".join("%.1f" % x for x in mta[k]["B"])) for k in ("plain", "tls")) + ".")
        if min(len(mta["plain"]["A"]), len(mta["tls"]["A"])) < 2:
            w("")
            w("10,000 messages take long enough that the TLS case (and the plaintext case where it says 1 "
              "round) ran once each way; treat its ratio as one sample, not a median.")
        w("")

    # 4
    w("## 4. Verdict latency for held flows")
    w("")
    lat = res.get("latency")
    if not lat:
        w("Not run.")
        w("")
    else:
        w("`bench/held_latency` in the guarded cgroup, to smtp-sink on %s (no STARTTLS): EHLO, then per message "
          "one write of `MAIL FROM:<%s>`, `RCPT TO`, `DATA` (as Postfix pipelines them), timed until the reply "
          "to MAIL is read; then the 503s, RSET, 250. One client, one message at a time, no warm-up: the "
          "figures include the first, cold, diversion." % (SINK_PLAIN, GUARANTEED))
        w("")
        w("| run | messages | reply | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | mean µs | target p99 ≤ 1 ms | "
          "others' CPU |")
        w("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
        for key, label, reply in (
                ("held_reuse", "held, one connection (RSET, flow handed back, diverted again)", "550 from tlsguardd"),
                ("held_new", "held, one connection per message (connect, EHLO, ..., RSET, QUIT)", "550 from tlsguardd"),
                ("pass_with", "reference: sender not guaranteed, with tlsguardd", "250 from smtp-sink"),
                ("pass_without", "reference: sender not guaranteed, without tlsguardd", "250 from smtp-sink")):
            v = lat.get(key)
            if not v:
                continue
            held = key.startswith("held")
            target = met(v["p99"] <= TARGET_P99_US) if held else ""
            if held:
                targets.append(("verdict p99 ≤ 1 ms: %s" % label.split(" (")[0], "%.0f µs" % v["p99"],
                                v["p99"] <= TARGET_P99_US))
            w("| %s | %d | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %s | %.0f%% (%d run%s) |" % (
                label, v["n"], reply, v["p50"], v["p90"], v["p99"], v["p999"], v["max"], v["mean"], target,
                v.get("other", 0) * 100, v.get("attempts", 1), "s" if v.get("attempts", 1) > 1 else ""))
        w("")
        w("tlsguardd counted %s held messages over the held runs (with repeats). A run during which other "
          "processes used more than %.0f%% of the CPUs was repeated once and the quieter one kept." % (
              lat.get("held_counted"), NOISY_SHARE * 100))
        w("")

    # 5
    w("## 5. Policy scale")
    w("")
    pol = res.get("policy")
    if not pol:
        w("Not run.")
        w("")
    else:
        w("A senders file of %s guaranteed senders (%.1f MB, `sNNNNNNN@dNNNNN.example` over 50,000 domains, plus "
          "%s) against the 10-entry file of the other cases; %d rounds each, alternating. Start time: from "
          "spawning tlsguardd until its control socket answers `status` (the request `tlsguardctl status` "
          "makes). Memory: `memlock` of the map in /proc/PID/fdinfo (= bpftool's `bytes_memlock`). The kernel "
          "path ran with the kernel's BPF run-time statistics on (%s) in both configurations; \"tg_smtp_msg "
          "ns/run\" is run_time_ns / run_cnt over the run." % (
              "{:,}".format(pol["senders"]), pol["file_bytes"] / 1e6, GUARANTEED, len(pol["small"]),
              pol.get("stats_how")))
        w("")

        def agg(size, fn):
            vals = [fn(x) for x in pol[size]]
            vals = [v for v in vals if v is not None]
            return median(vals)

        def sen(x):
            return x["maps"]["tg_senders"]["memlock"]
        rows = [
            ("tlsguardd start until status answers (s)", lambda x: x["start_s"], "%.2f"),
            ("tg_senders memlock (MiB)", lambda x: sen(x) / 2**20, "%.1f"),
            ("tg_senders memlock per sender more (bytes; 0: the table is sized by max_senders)", None, None),
            ("all tlsguard maps, memlock (MiB)", lambda x: sum(m["memlock"] for m in x["maps"].values()) / 2**20,
             "%.1f"),
            ("tlsguardd VmRSS after start (MiB)", lambda x: x["rss_kb"] / 1024, "%.1f"),
            ("tlsguardd VmHWM, peak (MiB)", lambda x: x["hwm_kb"] / 1024, "%.1f"),
            ("held latency p50 (µs)", lambda x: x["held"]["p50"], "%.0f"),
            ("held latency p99 (µs)", lambda x: x["held"]["p99"], "%.0f"),
            ("tg_smtp_msg ns/run, held run", lambda x: x["progs_held"].get("tg_smtp_msg", {}).get("avg_ns"), "%.0f"),
            ("plaintext, 10 sessions (msg/s)", lambda x: x["plain_rate"], "%.0f"),
            ("tg_smtp_msg ns/run, plaintext run (2 policy lookups per MAIL)",
             lambda x: x["progs_plain"].get("tg_smtp_msg", {}).get("avg_ns"), "%.0f"),
            ("SIGHUP reload of the same file (s)", lambda x: x.get("reload_s"), "%.2f"),
            ("tlsguardd VmRSS after reload (MiB)",
             lambda x: x["rss_after_reload_kb"] / 1024 if x.get("rss_after_reload_kb") else None, "%.1f"),
            ("`sender add` on the control socket, p50 (ms)",
             lambda x: percentile(sorted(x["sender_add_ms"]), 0.5) if x.get("sender_add_ms") else None, "%.2f"),
            ("`sender add` on the control socket, p99 (ms)",
             lambda x: percentile(sorted(x["sender_add_ms"]), 0.99) if x.get("sender_add_ms") else None, "%.2f"),
        ]
        w("| | 10 senders | %s senders |" % "{:,}".format(pol["senders"]))
        w("| --- | ---: | ---: |")
        for label, fn, spec in rows:
            if fn is None:
                s_ = agg("small", sen)
                b_ = agg("big", sen)
                w("| %s | – | %s |" % (label, fmt((b_ - s_) / (pol["senders"] - len(SMALL_SENDERS)), "%.1f")))
                continue
            if fn == "n/a":
                w("| %s | not available yet | not available yet |" % label)
                continue
            if fn == "estimate":
                s_, b_ = agg("small", sen), agg("big", sen)
                per = (b_ - s_) / (pol["senders"] - len(SMALL_SENDERS))
                est = s_ + pol["senders"] * kmalloc_class(int(round(per)) + 8)
                w("| %s | – | %s |" % (label, fmt(est / 2**20, spec)))
                continue
            w("| %s | %s | %s |" % (label, fmt(agg("small", fn), spec), fmt(agg("big", fn), spec)))
        w("")
        bigmem = agg("big", sen)
        targets.append(("policy map ≤ 64 MiB at %s senders" % "{:,}".format(pol["senders"]),
                        "%.1f MiB" % (bigmem / 2**20), bigmem <= TARGET_POLICY_BYTES))
        steady = max(max(x.get("rss_after_reload_kb") or 0, x["rss_kb"]) for x in pol["big"]) * 1024
        targets.append(("agent RSS ≤ 32 MiB: VmRSS at %s senders (after start, after reload)" % "{:,}".format(
            pol["senders"]), "%.1f MiB" % (steady / 2**20), steady <= TARGET_RSS_BYTES))
        adds = [t for x in pol["big"] for t in x.get("sender_add_ms") or []]
        if adds:
            p99 = percentile(sorted(adds), 0.99)
            targets.append(("`sender add` p99 ≤ 10 ms at %s senders" % "{:,}".format(pol["senders"]),
                            "%.2f ms" % p99, p99 <= 10))
        rss = max(x["hwm_kb"] for x in pol["big"]) * 1024
        targets.append(("agent RSS ≤ 32 MiB: peak VmHWM at %s senders (start, load, SIGHUP reload)" % "{:,}".format(
            pol["senders"]), "%.1f MiB" % (rss / 2**20), rss <= TARGET_RSS_BYTES))
        m0 = pol["big"][0]["maps"]["tg_senders"]
        w("tg_senders: %s, max_entries %s, key %d B, value %d B, map_flags %s (an array of buckets of seven "
          "keys each, sized by max_senders: include/tg_stab.h). `sender add`: %d new senders one after the "
          "other, each appended to the senders file with fsync. Targets: policy map %s, "
          "agent RSS %s (see the summary)." % (
              m0["type"], "{:,}".format(m0["max_entries"]), m0["key"], m0["value"], m0["flags"], SENDER_ADDS,
              met(bigmem <= TARGET_POLICY_BYTES), met(rss <= TARGET_RSS_BYTES)))
        w("")

    # 6
    w("## 6. Flow scale")
    w("")
    fl = res.get("flows")
    if not fl or not fl.get("B"):
        w("Not run.")
        w("")
    else:
        n = fl["flows"]
        A, B = fl["A"], fl["B"]

        def med(runs, key, scale=1.0):
            vals = [r[key] * scale for r in runs if r.get(key) is not None]
            return median(vals)
        w("`bench/flow_hold open -n %d` in the guarded cgroup opens %d connections to port 25, spread over %s "
          "(flow_hold sink: accepts, never reads), and holds them idle; measured 0.5 s after the last one is "
          "established; without, with, without, with; medians of %d." % (n, n, ", ".join(HOLD_SINKS), len(B)))
        w("")
        w("| | without | with |")
        w("| --- | ---: | ---: |")
        w("| time to establish all (s) | %.2f | %.2f |" % (med(A, "open_s"), med(B, "open_s")))
        w("| established connections seen | %d | %d |" % (med(A, "established"), med(B, "established")))
        w("| flows tracked (tlsguardctl status) | – | %s |" % fmt(med(B, "tracked")))
        w("| flows failed | – | %s |" % fmt(med(B, "failed")))
        st_ms = med(B, "status_s", 1000)
        w("| `status` reply time at %d flows (ms) | – | %.1f |" % (n, st_ms))
        if n >= 10000:
            targets.append(("`status` ≤ %.0f ms at %s flows" % (TARGET_STATUS_MS, "{:,}".format(n)),
                            "%.1f ms" % st_ms, st_ms <= TARGET_STATUS_MS))
        w("| slab growth (/proc/slabinfo, all caches), bytes per flow | %.0f | %.0f |" % (
            med(A, "slab_per_flow"), med(B, "slab_per_flow")))
        w("| of which kmalloc caches, bytes per flow | %.0f | %.0f |" % (
            med(A, "kmalloc_per_flow"), med(B, "kmalloc_per_flow")))
        w("| tlsguardd VmRSS before → after (MiB) | – | %.1f → %.1f |" % (
            med(B, "rss_before_kb") / 1024, med(B, "rss_after_kb") / 1024))
        w("| time to close all (s) | %s | %s |" % (fmt(med(A, "close_s"), "%.2f"), fmt(med(B, "close_s"), "%.2f")))
        w("")
        last = B[-1]
        w("tlsguard's maps (memlock from fdinfo) before and after the %d flows:" % n)
        w("")
        w("| map | type | max_entries | value B | memlock before | memlock after | per flow (B) |")
        w("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for name in sorted(last["maps_after"]):
            a_, b_ = last["maps_before"].get(name, {}), last["maps_after"][name]
            w("| %s | %s | %s | %d | %s | %s | %.1f |" % (
                name, b_["type"], "{:,}".format(b_["max_entries"]), b_["value"],
                "{:,}".format(a_.get("memlock", 0)), "{:,}".format(b_["memlock"]),
                (b_["memlock"] - a_.get("memlock", 0)) / n))
        w("")
        flows_map = last["maps_after"]["tg_flows"]
        socks = last["maps_after"]["tg_socks"]
        btf = fl.get("btf", {})
        acct = []
        if "sk_psock" in btf:
            acct.append(("sk_psock (kzalloc)", btf["sk_psock"]))
        if "sk_psock_link" in btf:
            acct.append(("sk_psock_link (its place in tg_socks)", btf["sk_psock_link"]))
        if "bpf_shtab_elem" in btf:
            acct.append(("tg_socks element (bpf_shtab_elem + key)", btf["bpf_shtab_elem"] + 8))
        if acct:
            w("Per tracked flow, from the kernel's own struct sizes (BTF) and the kmalloc size class each "
              "allocation falls into:")
            w("")
            w("| allocation | bytes | kmalloc class |")
            w("| --- | ---: | ---: |")
            tot = 0
            for label, sz in acct:
                w("| %s | %d | %d |" % (label, sz, kmalloc_class(sz)))
                tot += kmalloc_class(sz)
            per_entry = flows_map["memlock"] / flows_map["max_entries"]
            w("| tg_flows entry (preallocated: %s entries, %.0f bytes each, used or not) | %.0f | – |" % (
                "{:,}".format(flows_map["max_entries"]), per_entry, per_entry))
            w("| **total** | | **%.0f** |" % (tot + per_entry))
            w("")
            w("Measured: the slab grew by %.0f bytes per flow more with tlsguardd than without (kmalloc "
              "caches: %.0f); that difference is taken machine-wide and other work on the machine adds noise. "
              "The dynamic part is allocated per flow; tg_flows (%.1f MiB) and the tg_socks buckets are "
              "reserved at start whatever the load." % (
                  med(B, "slab_per_flow") - med(A, "slab_per_flow"),
                  med(B, "kmalloc_per_flow") - med(A, "kmalloc_per_flow"), flows_map["memlock"] / 2**20))
            w("")
        rss = max(r["rss_after_kb"] for r in B) * 1024
        targets.append(("agent RSS ≤ 32 MiB at %d flows" % n, "%.1f MiB" % (rss / 2**20), rss <= TARGET_RSS_BYTES))

    # 7
    pgr = res.get("pgsql")
    if pgr and pgr.get("hwm_kb"):
        w("## 7. Policy from PostgreSQL")
        w("")
        w("%s guaranteed senders in PostgreSQL 15 (a cluster of the run's own, on loopback, "
          "dist/pgsql/schema.sql; rows loaded in %.0f s), tlsguardd with `senders_file = pgsql:FILE` and no "
          "snapshot: the first sync streams every live row (single-row mode) into the policy, then the kernel "
          "map." % ("{:,}".format(pgr["senders"]), pgr.get("load_s", 0)))
        w("")
        w("| | |")
        w("| --- | ---: |")
        for label, v, spec in (
                ("first sync, as tlsguardd measured it (s)", pgr.get("sync_s"), "%.2f"),
                ("spawn until status answers, first sync and map included (s)", pgr.get("start_s"), "%.2f"),
                ("tlsguardd VmRSS after start (MiB)", pgr["rss_kb"] / 1024, "%.1f"),
                ("tlsguardd VmHWM, peak (MiB)", pgr["hwm_kb"] / 1024, "%.1f"),
                ("one INSERT, COMMIT until the kernel map has it (ms)", pgr.get("live_ms"), "%.1f"),
                ("tlsguardctl reload, a sync by sequence number (s)", pgr.get("reload_s"), "%.2f"),
                ("VmHWM after that reload (MiB)", (pgr.get("reload_hwm_kb") or 0) / 1024, "%.1f"),
                ("every row read again while running (new database identity) (s)", pgr.get("full_s"), "%.2f"),
                ("VmHWM after that full read: two policies at once (MiB)", (pgr.get("full_hwm_kb") or 0) / 1024,
                 "%.1f"),
                ("snapshot file (MiB)", pgr.get("snapshot_bytes", 0) / 2**20, "%.1f"),
                ("start on the snapshot, database stopped (s)", pgr.get("snapshot_start_s"), "%.2f"),
                ("VmHWM, start on the snapshot (MiB)", (pgr.get("snapshot_hwm_kb") or 0) / 1024, "%.1f")):
            w("| %s | %s |" % (label, fmt(v, spec)))
        w("")
        targets.append(("first sync from PostgreSQL ≤ 5 s at %s senders" % "{:,}".format(pgr["senders"]),
                        "%.2f s" % (pgr.get("start_s") or 0), (pgr.get("start_s") or 99) <= 5))
        targets.append(("agent RSS ≤ 32 MiB: peak VmHWM, %s senders from PostgreSQL" % "{:,}".format(
            pgr["senders"]), "%.1f MiB" % (pgr["hwm_kb"] / 1024), pgr["hwm_kb"] * 1024 <= TARGET_RSS_BYTES))

    # profile
    prof = res.get("profile")
    w("## Where the time goes")
    w("")
    if not prof:
        w("Not run.")
        w("")
    else:
        w("tlsguardd attached, kernel BPF statistics on (%s); per program: invocations per message and "
          "average run time. \"BPF µs/msg\" is the programs' total run time per message; compare it with the "
          "CPU µs/msg in cases 1 and 2." % prof.get("stats_how"))
        w("")
        w("| run | msg/s | program | runs/msg | ns/run | BPF µs/msg |")
        w("| --- | ---: | --- | ---: | ---: | ---: |")
        for key in ("plain-10", "plain-50", "tls-10"):
            v = prof.get(key)
            if not v:
                continue
            progs = sorted(((p["run_time_ns"], name) for name, p in v["progs"].items() if p["run_cnt"]),
                           reverse=True)
            for _, name in progs:
                p = v["progs"][name]
                w("| %s | %.0f | %s | %.2f | %s | %.2f |" % (
                    key, v["messages"] / v["elapsed"], name, p["run_cnt"] / v["messages"], fmt(p["avg_ns"]),
                    p["run_time_ns"] / v["messages"] / 1000))
        w("")
        uo = prof.get("uprobes_only")
        if uo and uo.get("U"):
            def mu(mode, key):
                return median([r[key] for r in uo[mode]])
            w("What the libssl uprobes alone cost: TLS, 10 sessions, %d messages a run, %d rounds of without; "
              "tlsguardd attached to an **empty** cgroup (its uprobes are on its copies of the library, so they "
              "fire in every process that maps them, here the load, run with the copies bound, but no flow of "
              "the load is tracked: %s flows tracked); tlsguardd on the load's cgroup (medians). tls_sink maps "
              "the system's libssl and traps in none of them." % (
                  uo["messages"], len(uo["A"]), "/".join(str(x) for x in uo["U_flows"])))
            w("")
            w("| | without | uprobes only | with |")
            w("| --- | ---: | ---: | ---: |")
            w("| msg/s | %.0f | %.0f | %.0f |" % (mu("A", "rate"), mu("U", "rate"), mu("B", "rate")))
            w("| ratio to without | 1 | %.3f | %.3f |" % (mu("U", "rate") / mu("A", "rate"),
                                                       mu("B", "rate") / mu("A", "rate")))
            for key, label in (("generator", "tls_source CPU µs/msg (in the guarded cgroup)"),
                               ("sinks", "tls_sink CPU µs/msg (outside it)"),
                               ("tlsguardd", "tlsguardd CPU µs/msg"),
                               ("kthreads", "kernel threads CPU µs/msg")):
                w("| %s | %.0f | %.0f | %.0f |" % (label, mu("A", key), mu("U", key), mu("B", key)))
            t10 = prof.get("tls-10")
            if t10:
                hits = sum(p["run_cnt"] for n, p in t10["progs"].items() if n.startswith("tg_ssl")) / t10["messages"]
                bpf = sum(p["run_time_ns"] for n, p in t10["progs"].items()
                          if n.startswith("tg_ssl")) / t10["messages"] / 1000
                extra = sum(mu("U", k) - mu("A", k) for k in ("generator", "sinks", "kthreads"))
                w("")
                w("The uprobe programs ran %.1f times per message (tls_source's end) for %.1f µs of BPF time; the "
                  "CPU per "
                  "message grew by %.0f µs with the uprobes alone: about %.1f µs per probe hit, almost all of it "
                  "the trap and its handling, not the BPF program." % (hits, bpf, extra, extra / hits if hits else 0))
            w("")
        perf = prof.get("perf")
        if perf and all("rows" in perf.get(m, {}) for m in ("A", "B")):
            ra, rb = perf["A"]["rows"], perf["B"]["rows"]

            def by_comm(rows):
                d = {}
                for pct, who, _ in rows:
                    d[who] = d.get(who, 0.0) + pct
                return d

            def share(rows, pat):
                return sum(p for p, who, sym in rows if re.search(pat, sym) and who != "other processes")
            ca, cb = by_comm(ra), by_comm(rb)
            w("`perf record -a -F 1999` during plaintext, 50 sessions (cpu-clock samples on all CPUs, by "
              "process; \"other processes\" are not this benchmark's: the machine is shared):")
            w("")
            w("| process | without % | with % |")
            w("| --- | ---: | ---: |")
            for comm in sorted(set(ca) | set(cb), key=lambda c: -max(ca.get(c, 0), cb.get(c, 0))):
                if max(ca.get(comm, 0), cb.get(comm, 0)) >= 0.5:
                    w("| %s | %.1f | %.1f |" % (comm, ca.get(comm, 0), cb.get(comm, 0)))
            w("")
            pats = (("tlsguard's BPF programs (JIT)", r"^bpf_prog_"),
                    ("sockmap, sk_msg, psock, tcp_bpf", r"psock|sk_msg|sock_map|sock_hash|tcp_bpf|sk_skb|strp_"),
                    ("other BPF helpers and runtime", r"^(bpf_|__bpf_)(?!prog_)"))
            w("| samples of this benchmark's processes in | without % | with % |")
            w("| --- | ---: | ---: |")
            for label, pat in pats:
                w("| %s (`%s`) | %.1f | %.1f |" % (label, pat, share(ra, pat), share(rb, pat)))
            w("")
            top = sorted(((p, sym) for p, who, sym in rb if who != "other processes" and
                          re.search(r"bpf|psock|sk_msg|sock_map|sock_hash|tcp_bpf", sym)), reverse=True)[:12]
            if top:
                w("Top BPF/sockmap symbols with tlsguardd: " + ", ".join("`%s` %.2f%%" % (sym, p) for p, sym in top)
                  + ".")
                w("")
            w("On this machine (a PVM guest) kernel samples taken while interrupts were off are booked to "
              "`pvm_irq_enable`, so the kernel's own symbols are under-counted; the BPF run-time statistics "
              "above are exact.")
            w("")

    # 8
    w("## 8. Outside the guarded cgroup")
    w("")
    out = res.get("outside")
    if not out:
        w("Not run.")
        w("")
    else:
        w("The loads of cases 1 and 2 at %d sessions, run in a cgroup that tlsguard does not guard, with the "
          "system's TLS libraries (no copies bound), while tlsguardd (\"with\") or bench/null_hooks "
          "(\"floor\") is attached to another cgroup, with nothing in it: what tlsguard costs the rest of "
          "the host (an IMAP server, a web server, inbound smtpd). A uprobe is per library file, not per "
          "cgroup: it traps in every process that maps the file. tlsguardd and the floor probe the copies "
          "(tls_library_copies), which nothing here maps; \"with, shared libraries\" is tlsguardd without "
          "tls_library_copies, its uprobes on the system's files: every SSL_read and SSL_write of the load "
          "and of tls_sink traps (what the copies save). A flow outside the cgroup is never in tlsguard's "
          "sockhash." % OUTSIDE_SESSIONS)
        w("")
        w("| load | messages/run | without (msg/s) | floor (msg/s) | with (msg/s) | ratio | with / floor | "
          "target ≥ %.2f | with, shared libraries (msg/s) | its ratio | flows tracked/run | others' CPU |"
          % TARGET_OUTSIDE)
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
        for kind in ("plain", "tls"):
            d = out.get(kind)
            if not d:
                continue
            a, f, b = median(d["A"]), median(d["F"]), median(d["B"])
            ratio = b / a if a and b else None
            fr = b / f if f and b else None
            ok = ratio_verdict(ratio, fr, TARGET_OUTSIDE)
            label = "plaintext" if kind == "plain" else "TLS"
            targets.append(("ratio ≥ %.2f: %s load outside the guarded cgroup" % (TARGET_OUTSIDE, label),
                            ratio_cell(ratio, fr), ok))
            sh = median(d.get("S") or [])
            w("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                label, d["messages"], fmt(a), fmt(f), fmt(b), fmt(ratio, "%.3f"), fmt(fr, "%.3f"), met(ok),
                fmt(sh), fmt(sh / a if a and sh else None, "%.3f"), fmt(median(d["B_flows"])),
                fmt(max(d["other"]) * 100, "≤ %.0f%%")))
        w("")
        w("Every run (msg/s): " + "; ".join("%s without %s, floor %s, with %s, with shared libraries %s" % (
            k, ", ".join("%.0f" % x for x in out[k]["A"]), ", ".join("%.0f" % x for x in out[k]["F"]),
            ", ".join("%.0f" % x for x in out[k]["B"]), ", ".join("%.0f" % x for x in out[k].get("S", [])))
            for k in ("plain", "tls") if k in out) + ".")
        w("")

    # 9
    w("## 9. Audit trail on")
    w("")
    au = res.get("audit")
    if not au or not au.get("rounds"):
        w("Not run.")
        w("")
    else:
        w("tlsguardd without and with `--audit FILE` (the file on the machine's disk, %s, under /var/tmp), "
          "per round one after the other: held, case 4's held run on one connection (%d messages, one record "
          "each); plaintext, case 1's load at %d sessions (%d messages, one record each); held under load, "
          "%d held messages while a plaintext load at %d sessions runs beside them in the same cgroup. Medians "
          "over %d round(s); tlsguardd's VmHWM (its peak memory, after the three runs) is the largest over "
          "them." % (au["fstype"], au["held_messages"], OUTSIDE_SESSIONS, au["plain_messages"],
                                  au["mixed_messages"], OUTSIDE_SESSIONS,
                                  len(au["rounds"]) // 2))
        w("")
        w("| audit | held p50 µs | held p99 µs | plaintext msg/s | plaintext records/messages | "
          "held under load p50 µs | held under load p99 µs | held runs under load lost | records written/run | "
          "tlsguardd VmHWM (MiB) |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for mode in ("off", "on"):
            rs = [x for x in au["rounds"] if x["mode"] == mode]
            if not rs:
                continue
            recs = [x["records"] for x in rs if x["records"] is not None]
            mixed = [x["mixed"] for x in rs if x["mixed"]["p50"] is not None]
            precs = [x["plain_records"] for x in rs if x.get("plain_records") is not None]
            hwm = [x["hwm_kb"] / 1024 for x in rs if x.get("hwm_kb")]
            w("| %s | %.0f | %.0f | %.0f | %s | %s | %s | %d of %d | %s | %s |" % (
                mode, median([x["held"]["p50"] for x in rs]), median([x["held"]["p99"] for x in rs]),
                median([x["plain"] for x in rs]),
                ", ".join("%d/%d" % (x, au["plain_messages"]) for x in precs) or "-",
                fmt(median([x["p50"] for x in mixed]) if mixed else None),
                fmt(median([x["p99"] for x in mixed]) if mixed else None), len(rs) - len(mixed), len(rs),
                ", ".join("%d" % x for x in recs) or "-", "%.1f" % max(hwm) if hwm else "-"))
        w("")
        w("Every run (audit: held p50/p99, plaintext msg/s, under load p50/p99): " + "; ".join(
            "%s %.0f/%.0f, %.0f, %s/%s" % (x["mode"], x["held"]["p50"], x["held"]["p99"], x["plain"],
                                          fmt(x["mixed"]["p50"]), fmt(x["mixed"]["p99"])) for x in au["rounds"])
          + ".")
        w("")
        for x in au["rounds"]:
            if x["mixed"].get("error"):
                w("- audit %s, held under load: %s" % (x["mode"], x["mixed"]["error"]))
        w("")

    # summary of targets, placed at the top
    summ = ["## Targets", "", "| target | result | |", "| --- | ---: | --- |"]
    for name, val, ok in targets:
        summ.append("| %s | %s | %s |" % (name, val, met(ok)))
    summ.append("")
    summ.append("A ratio is given with its floor, with / floor: tlsguard against programs that do nothing on the "
                "same hooks (bench/null_hooks; its uprobes on the same files, tlsguardd's copies of the TLS "
                "libraries). \"Met at the floor\": the ratio misses its target, tlsguard is "
                "within %.0f%% of the floor, and the kernel mechanism itself (sockmap, cgroup hooks, uprobe traps) "
                "is what costs the rest; README \"What it costs\" says what would lower it." % (
                    (1 - TARGET_RATIO) * 100))
    summ.append("")
    lines[summary_at:summary_at] = summ
    with open(os.path.join(out_dir, "RESULTS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def write_plot(res, out_dir, tmp):
    rates = res.get("rates")
    if not rates or set(rates) != {"plain", "tls"} or not shutil.which("gnuplot"):
        return False
    data = os.path.join(tmp, "throughput.dat")
    with open(data, "w") as f:
        f.write("# sessions plain_without plain_with tls_without tls_with\n")
        for s in CONCURRENCY:
            f.write("%d %s\n" % (s, " ".join("%.1f" % median(rates[k][s][m]) for k in ("plain", "tls")
                                            for m in ("A", "B"))))
    png = os.path.join(out_dir, "throughput.png")
    script = """
set terminal pngcairo size 1000,650 font "DejaVu Sans,11"
set output '%(png)s'
set title "tlsguard: messages/s vs concurrency (medians of %(rounds)d runs; %(nproc)s CPUs, kernel %(kernel)s)\\n{/*0.85 plaintext: smtp-source, 1 message per connection; TLS 1.3: tls\\\\_source, 10 messages per STARTTLS session; 4 KiB payload}"
set xlabel "parallel SMTP sessions"
set ylabel "messages/s"
set logscale x
set xrange [0.8:65]
set xtics ("1" 1, "10" 10, "50" 50)
set yrange [0:*]
set grid ytics
set key outside below center horizontal maxrows 2 width 2
set pointsize 1.4
plot '%(data)s' using 1:2 with linespoints lw 2 pt 7 lc rgb "#1f77b4" title "plaintext, without tlsguard", \\
     '' using 1:3 with linespoints lw 2 dt 2 pt 5 lc rgb "#1f77b4" title "plaintext, with tlsguard", \\
     '' using 1:4 with linespoints lw 2 pt 7 lc rgb "#d62728" title "TLS 1.3, without tlsguard", \\
     '' using 1:5 with linespoints lw 2 dt 2 pt 5 lc rgb "#d62728" title "TLS 1.3, with tlsguard"
# plaintext: smtp-source, 1 message per connection; TLS: tls_source, 10 messages per session
""" % {"png": png, "data": data, "rounds": res["config"]["rounds"], "nproc": res["machine"]["nproc"],
       "kernel": res["machine"]["kernel"]}
    r = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        res["errors"].append("gnuplot: %s" % r.stderr.strip()[-300:])
        return False
    return True


# ------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tlsguardd", default=os.path.join(REPO, "build", "tlsguardd"))
    ap.add_argument("--tlsguardctl", default=os.path.join(REPO, "build", "tlsguardctl"))
    ap.add_argument("--bin", default=os.path.join(HERE, "build"), help="where the bench programs are")
    ap.add_argument("--out", default=HERE, help="where RESULTS.md, throughput.png, results.json go")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="A/B rounds for cases 1 and 2")
    ap.add_argument("--only", default="1,2,3,4,5,6,7,8,9,p", help="cases to run, e.g. 1,2,p (p: profile)")
    ap.add_argument("--quick", action="store_true", help="a tenth of every count, 1 round: for development")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--report", metavar="RESULTS_JSON",
                    help="run nothing: write RESULTS.md again from a run's results.json (the plot is kept)")
    args = ap.parse_args()
    if args.report:
        def int_keys(x):
            # JSON made the sessions' keys strings; the report indexes by number
            if isinstance(x, dict):
                return {int(k) if isinstance(k, str) and k.isdigit() else k: int_keys(v) for k, v in x.items()}
            return [int_keys(v) for v in x] if isinstance(x, list) else x
        with open(args.report) as f:
            saved = int_keys(json.load(f))
        write_report(saved, args.out, saved.get("elapsed_s", 0))
        print("bench: wrote %s from %s" % (os.path.join(args.out, "RESULTS.md"), args.report))
        return 0
    args.mta_rounds = dict(MTA_ROUNDS)
    args.policy_rounds = POLICY_ROUNDS
    if args.quick:
        args.rounds = 1
        args.mta_rounds = {"plain": 1, "tls": 1}
        args.policy_rounds = 1
    only = set(args.only.split(","))

    if os.geteuid() != 0:
        print("bench: must run as root (cgroups, BPF)", file=sys.stderr)
        return 1
    for path in (args.tlsguardd, args.tlsguardctl) + tuple(
            os.path.join(args.bin, p) for p in ("tls_source", "tls_sink", "held_latency", "flow_hold",
                                                "null_hooks")):
        if not os.access(path, os.X_OK):
            print("bench: %s is missing: run `make bench`" % path, file=sys.stderr)
            return 1
    for tool in ("smtp-source", "smtp-sink", "bpftool", "openssl"):
        if not shutil.which(tool):
            print("bench: %s is missing: run `make deps`" % tool, file=sys.stderr)
            return 1

    def on_signal(signo, frame):
        raise Interrupted(signal.Signals(signo).name)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    b = Bench(args)
    b.results["machine"] = machine_facts()
    b.results["config"] = {
        "rounds": args.rounds, "quick": args.quick, "msg_len": MSG_LEN, "plain_messages": PLAIN_MESSAGES,
        "side_by_side": True, "window_s": WINDOW_S / 5 if args.quick else WINDOW_S,
        "window_messages": WINDOW_MESSAGES,
        "tls_messages": TLS_MESSAGES, "tls_per_session": TLS_PER_SESSION, "mta_messages": MTA_MESSAGES,
        "mta_rounds": args.mta_rounds, "held_messages": HELD_MESSAGES, "policy_senders": POLICY_SENDERS,
        "flows": FLOWS}
    t0 = time.monotonic()
    kinds = [k for k, c in (("plain", "1"), ("tls", "2")) if c in only]
    cases = [("12", lambda: b.case_rates(kinds)), ("3", b.case_mta), ("4", b.case_latency), ("5", b.case_policy),
             ("6", b.case_flows), ("7", b.case_pgsql), ("8", b.case_outside),
             ("9", b.case_audit), ("p", b.case_profile)]
    try:
        b.setup()
        for key, fn in cases:
            if not set(key) & only:
                continue
            log("case %s" % key)
            try:
                fn()
            except Interrupted:
                raise
            except Exception as e:  # noqa: BLE001 - report it and go on with the next case
                b.results["errors"].append("case %s: %s: %s" % (key, type(e).__name__, e))
                log("case %s broke: %s" % (key, e))
                b.stop_daemon()
                b.stop_floor()
    except Interrupted as e:
        log("interrupted (%s): cleaning up; no results written" % e)
        b.cleanup()
        return 130
    except Exception:
        b.cleanup()
        raise
    elapsed = time.monotonic() - t0
    b.results["quiet_waited_s"] = b.quiet_waited
    b.results["elapsed_s"] = elapsed
    try:
        os.makedirs(args.out, exist_ok=True)
        plotted = write_plot(b.results, args.out, b.tmp)
        write_report(b.results, args.out, elapsed)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(b.results, f, indent=1, sort_keys=True)
    finally:
        b.cleanup()
    log("wrote %s%s (%.1f min)" % (os.path.join(args.out, "RESULTS.md"),
                                   " and throughput.png" if plotted else "", elapsed / 60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
