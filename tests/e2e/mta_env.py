#!/usr/bin/python3
"""Private, throw-away Exim and OpenSMTPD instances inside a test cgroup v2,
with the interface of postfix_env.PostfixInstance that mta_run.py uses.

Where the binaries come from
----------------------------
Debian's exim4-daemon-light and opensmtpd conflict with postfix (each
provides mail-transport-agent), so they are not installed: ``make
mta-deps`` (tests/e2e/mta_deps.sh) unpacks their .debs into ``DEPS``
(build/deps/root by default, or $TLSGUARD_MTA_DEPS), installs their
libraries and creates their system users.  ``find_mtas(deps)`` says, for
each MTA, whether it can run here and, if not, why (``MTAMissing``).

Contract (both classes)
-----------------------
``X(root, cgroup, routes, mailbox_domains, mailboxes, hostname, deps)`` --
everything lives under ``root`` (a directory the caller created):
  * ``routes``: {domain: "127.0.0.N"} -- mail for that domain goes to that
    host, port 25, over SMTP with opportunistic STARTTLS (the MTA's default:
    it uses TLS when the host offers it, plaintext when not);
  * ``mailbox_domains`` are local; ``mailbox(address)`` parses the mbox file
    that mail to ``address`` lands in (``mail/<local>@<domain>``, lower case,
    without a ``+tag``);
  * ``start()`` writes the configuration and starts the MTA's daemon from a
    shell that first moved itself into ``cgroup``; ``stop()`` ends it by pid
    (SIGTERM) and waits until the cgroup is empty.  Idempotent.
  * ``send(sender, recipients, subject)`` injects a message with the MTA's
    sendmail interface and returns a ``postfix_env.Mail``;
  * ``outcomes(mails)`` reads the MTA's log: {marker: Outcome}, each
    recipient's latest ``Status`` (``sent``, ``bounced``, ``deferred``) with
    the MTA's text;
  * ``bounces_for(address, marker)``: the MTA's bounces (``BOUNCE_SUBJECT``)
    in the mailbox of ``address`` that return the mail carrying ``marker``;
  * ``log_tail()``: the end of the MTA's log, for failure messages.

Exim (``EximInstance``): ``exim4 -C conf/exim.conf`` with its own spool,
log and hints database; a ``manualroute`` router sends each routed domain to
its host, an ``appendfile`` transport delivers local mail (the bounces) into
``mail/``.  Exim gives up root when it runs with -C (the file is not in
Debian's TRUSTED_CONFIG_LIST), so local deliveries run as Debian-exim.  The
daemon is ``exim -q2s`` (queue runs every 2 s, for retries), which listens
on no socket; mail is injected by a sendmail-mode exim started inside the
cgroup, so that its immediate delivery runs there too.  Bounces land in
``mail/catchall@<domain>`` unless the address is in ``mailboxes``.  Retries: every 2 s
for up to ``retry_minutes``.

OpenSMTPD (``SmtpdInstance``): smtpd 6.8 has its spool (/var/spool/smtpd),
control socket (/var/run/smtpd.sock), privilege-separation chroot
(/var/lib/opensmtpd/empty) and helpers (/usr/libexec/opensmtpd) compiled in,
so it runs in a mount namespace of its own (``unshare -m``) in which private
directories are mounted there: nothing on the host changes, and the mounts
go away with the last process.  ``smtpd -d`` stays in the foreground and
logs to ``smtpd.log``; ``send`` runs its sendmail (smtpctl) in that
namespace with ``nsenter``.  A relay action per routed domain: ``relay host
smtp://ADDR``.  Local mail is delivered by ``mail.mboxfile`` as ``nobody``.
"""

import email
import email.utils
import os
import pwd
import re
import signal
import subprocess
import time
import uuid

from postfix_env import Mail, MailLog, Outcome, Status, _pid_alive, mailbox_name

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_DEPS = os.environ.get("TLSGUARD_MTA_DEPS") or os.path.join(REPO, "build", "deps", "root")
DEPS_HINT = "run `make mta-deps` (part of `make deps`; see tests/e2e/mta_deps.sh)"
NOBODY = 65534


class MTAMissing(RuntimeError):
    pass


class MTAError(RuntimeError):
    pass


def _user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def check_exim(deps):
    exim = os.path.join(deps, "usr/sbin/exim4")
    if not os.access(exim, os.X_OK):
        raise MTAMissing("Exim is not unpacked (no %s): %s" % (exim, DEPS_HINT))
    if _user("Debian-exim") is None:
        raise MTAMissing("the Debian-exim user that exim4 is built for does not exist: %s" % DEPS_HINT)
    return exim


def check_smtpd(deps):
    smtpd = os.path.join(deps, "usr/sbin/smtpd")
    ctl = os.path.join(deps, "usr/sbin/smtpctl")
    if not os.access(smtpd, os.X_OK) or not os.access(ctl, os.X_OK):
        raise MTAMissing("OpenSMTPD is not unpacked (no %s): %s" % (smtpd, DEPS_HINT))
    for u in ("opensmtpd", "opensmtpq"):
        if _user(u) is None:
            raise MTAMissing("the %s user that smtpd is built for does not exist: %s" % (u, DEPS_HINT))
    st = os.stat(ctl)
    if not st.st_mode & 0o2000 or st.st_gid != _user("opensmtpq").pw_gid:
        raise MTAMissing("%s must be setgid opensmtpq (its sendmail refuses to run otherwise): %s" % (
            ctl, DEPS_HINT))
    for tool in ("/usr/bin/unshare", "/usr/bin/nsenter"):
        if not os.access(tool, os.X_OK):
            raise MTAMissing("%s is missing (util-linux)" % tool)
    return smtpd


def _headers(sender, recipients, subject, marker, hostname):
    message_id = "<%s@e2e.%s>" % (marker, hostname)
    subject = ("%s %s" % (subject, marker)).strip()
    headers = [
        ("From", sender if sender else "MAILER-DAEMON@" + hostname),
        ("To", ", ".join(recipients)),
        ("Subject", subject),
        ("Message-ID", message_id),
        ("Date", email.utils.formatdate(localtime=True)),
        ("X-E2E-Marker", marker),
    ]
    text = "".join("%s: %s\n" % h for h in headers) + "\nmarker: %s\n" % marker
    return text, message_id, subject


class _Instance(MailLog):
    """What Exim and OpenSMTPD share (the log, mailboxes and bounces: MailLog)."""
    name = None

    def __init__(self, root, cgroup, routes, mailbox_domains=("mta.test",), mailboxes=(),
                 hostname="mta.test", deps=DEFAULT_DEPS):
        self.root = os.path.abspath(root)
        self.cgroup = cgroup
        self.routes = dict(routes)
        self.mailbox_domains = list(mailbox_domains)
        self.mailboxes = sorted({mailbox_name(a) for a in mailboxes})
        self.hostname = hostname
        self.deps = os.path.abspath(deps)  # in exim_path and a symlink: must not depend on the cwd
        self.maildir = os.path.join(self.root, "mail")
        self.pid = None
        self._running = False

    def _write(self, path, text, mode=0o644):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)

    def mailbox_path(self, address):
        return os.path.join(self.maildir, mailbox_name(address))

    def _new_mail(self, sender, recipients, subject):
        marker = "m-" + uuid.uuid4().hex[:16]
        text, message_id, subject = _headers(sender, recipients, subject, marker, self.hostname)
        return text, Mail(marker, sender, list(recipients), message_id, subject, time.time())

    def _wait_gone(self, pid, timeout):
        deadline = time.monotonic() + timeout
        while pid is not None and _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid is not None and _pid_alive(pid):
            raise MTAError("%s pid %d did not exit after SIGTERM" % (self.name, pid))
        if not self.cgroup.wait_empty(max(1.0, deadline - time.monotonic())):
            raise MTAError("%s processes left in %s: %s" % (self.name, self.cgroup.path, self.cgroup.pids()))


# ---------------------------------------------------------------- Exim

EXIM_CONF = """\
# Written by tlsguard tests/e2e/mta_env.py: a private Exim, no listener.
exim_path = {exim}
primary_hostname = {hostname}
qualify_domain = {hostname}
spool_directory = {root}/spool
log_file_path = {root}/log/%slog
pid_file_path = {root}/exim.pid
domainlist local_domains = {local_domains}
# Mail for these waits for a forced queue run (force_queue_run()).
hold_domains = {hold_domains}
queue_run_in_order = true
never_users = root
keep_environment =
# no "message delayed" warnings; a frozen bounce is dropped soon
delay_warning = 0s
timeout_frozen_after = 5m
log_selector = +received_recipients +tls_cipher +smtp_confirmation +outgoing_port
# The client side is Exim's default: STARTTLS whenever the host offers it
# (hosts_try_tls = *), plaintext when it does not, and in clear on a new
# connection when the handshake fails (tls_tempfail_tryclear = true).

begin routers

routed:
  driver = manualroute
  domains = ! +local_domains
  route_data = ${{lookup{{$domain}}lsearch{{{root}/conf/routes}}}}
  transport = remote_smtp
  no_more

local:
  driver = accept
  domains = +local_domains
  local_part_suffix = +*
  local_part_suffix_optional
  transport = mbox

begin transports

remote_smtp:
  driver = smtp
  # A delivery down a continued TLS connection that tlsguard cut waits
  # this long for its TLS proxy's answer (Exim's default: 5m).
  command_timeout = 20s

# The file name comes from a lookup, so it is not tainted by the address.
mbox:
  driver = appendfile
  file = {root}/mail/${{lookup{{${{lc:$local_part}}@${{lc:$domain}}}}lsearch*@{{{root}/conf/mailboxes}}}}
  user = Debian-exim
  group = Debian-exim
  mode = 0644
  delivery_date_add
  envelope_to_add
  return_path_add

begin retry

*  *  F,{retry_minutes}m,2s
"""

# <id> <flag> <address> ...: the delivery log lines of Exim's mainlog.
_EXIM_LINE = re.compile(r"^\S+ \S+ (?:\[\d+\] )?(\w{6}-\w{6,11}-\w{2,4}) (<=|=>|->|\*\*|==) (.*)$")


class EximInstance(_Instance):
    name = "exim"
    BOUNCE_SUBJECT = "Mail delivery failed: returning message to sender"

    def __init__(self, *a, retry_minutes=10, hold_domains=(), **kw):
        super().__init__(*a, **kw)
        self.exim = check_exim(self.deps)
        self.retry_minutes = retry_minutes
        self.hold_domains = list(hold_domains)
        self.runners = []  # force_queue_run() processes
        self.conf = os.path.join(self.root, "conf", "exim.conf")
        self.log_path = os.path.join(self.root, "log", "mainlog")

    def write_config(self):
        ex = _user("Debian-exim")
        os.chmod(self.root, 0o755)
        for d in ("conf", "spool", "log", "mail"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        for d in ("spool", "log", "mail"):
            os.chown(os.path.join(self.root, d), ex.pw_uid, ex.pw_gid)
        domains = sorted(set(self.mailbox_domains))
        self._write(self.conf, EXIM_CONF.format(
            exim=self.exim, hostname=self.hostname, root=self.root, local_domains=" : ".join(domains),
            hold_domains=" : ".join(self.hold_domains), retry_minutes=self.retry_minutes))
        self._write(os.path.join(self.root, "conf", "routes"),
                    "".join("%s: %s\n" % kv for kv in self.routes.items()))
        self._write(os.path.join(self.root, "conf", "mailboxes"),
                    "".join("%s: %s\n" % (a, a) for a in self.mailboxes)
                    + "".join("*@%s: catchall@%s\n" % (d, d) for d in domains))

    def start(self):
        self.write_config()
        # A queue-runner daemon (-q2s without -bd) listens on no socket; it
        # forks into the background, and -oP is then the only way to have
        # it write its pid.  It is ended by that pid.
        script = 'echo $$ > "$1" && exec "$2" -C "$3" -q2s -oP "$4"'
        pidfile = os.path.join(self.root, "exim-daemon.pid")
        self._running = True
        r = subprocess.run(["/bin/sh", "-c", script, "sh", self.cgroup.procs_file, self.exim, self.conf, pidfile],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise MTAError("exim -q2s exited with %d: %s%s%s" % (r.returncode, r.stdout, r.stderr, self.log_tail()))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.pid is None:
            try:
                with open(pidfile) as f:
                    self.pid = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.1)
        if self.pid is None:
            raise MTAError("exim wrote no pid file %s within 20 s%s" % (pidfile, self.log_tail()))
        if self.pid not in self.cgroup.pids():
            raise MTAError("exim daemon (pid %d) is not in cgroup %s" % (self.pid, self.cgroup.path))
        if any(re.search(r"daemon started: .*listening for SMTP", x) and "not listening" not in x
               for x in self.log_lines()):
            raise MTAError("the exim daemon listens for SMTP (it must not)%s" % self.log_tail())
        return self

    def stop(self, timeout=20.0):
        if not self._running:
            return
        if self.pid is not None and _pid_alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
        # Delivery processes forked by injections and queue runs do not
        # follow the daemon; a TLS proxy of a continued connection waits up
        # to 5 minutes.  Every process in the cgroup is this Exim's: after
        # a grace period, each is ended by its pid.
        if not self.cgroup.wait_empty(5.0):
            for pid in self.cgroup.pids():
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        self._wait_gone(self.pid, timeout)
        for r in self.runners:
            r.wait()  # gone with the cgroup: reap it
        self._running = False

    def mailbox_path(self, address):
        """As the mbox transport's lookup: a listed mailbox, else the domain's catchall."""
        name = mailbox_name(address)
        if name not in self.mailboxes:
            name = "catchall@" + name.rpartition("@")[2]
        return os.path.join(self.maildir, name)

    def send(self, sender, recipients, subject=""):
        text, mail = self._new_mail(sender, recipients, subject)
        # Inside the cgroup: exim delivers at once from a process it forks.
        script = 'echo $$ > "$1" && shift && exec "$@"'
        cmd = ["/bin/sh", "-c", script, "sh", self.cgroup.procs_file,
               self.exim, "-C", self.conf, "-i", "-f", sender, "--", *recipients]
        r = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise MTAError("exim -C %s -f %s failed (exit %d): %s%s" % (self.conf, sender, r.returncode, r.stdout,
                                                                       r.stderr))
        return mail

    def force_queue_run(self):
        """Start ``exim -qqf`` inside the cgroup: a forced two-stage queue run (held domains too,
        oldest first), in the background.  Its first stage routes every message, so that the second
        sends the messages for one host down one connection (Exim's continued connections).  It is
        not waited for: a delivery whose connection tlsguard cut may wait for its command_timeout."""
        script = 'echo $$ > "$1" && shift && exec "$@"'
        self.runners.append(subprocess.Popen(
            ["/bin/sh", "-c", script, "sh", self.cgroup.procs_file, self.exim, "-C", self.conf, "-qqf"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))

    def outcomes(self, mails):
        by_msgid = {m.message_id.strip("<>"): Outcome(m) for m in mails}
        by_id = {}
        for line in self.log_lines():
            m = _EXIM_LINE.match(line)
            if not m:
                continue
            xid, flag, rest = m.groups()
            if flag == "<=":
                i = re.search(r" id=(\S+)", rest)
                o = by_msgid.get(i.group(1)) if i else None
                if o is not None and o.queue_id is None:
                    o.queue_id = xid
                    by_id[xid] = o
                continue
            o = by_id.get(xid)
            if o is None:
                continue
            # "addr R=...", "local <addr> R=..." or, for a retry cutoff, "addr: text"
            bracket = re.match(r"\S+ <([^>]+)>", rest)
            addr = (bracket.group(1) if bracket else rest.split(" ", 1)[0].rstrip(":")).lower()
            status = {"=>": "sent", "->": "sent", "**": "bounced", "==": "deferred"}[flag]
            text = rest.split(": ", 1)[1] if flag in ("**", "==") and ": " in rest else rest
            relay = re.search(r" H=(\S+ \[[^\]]+\](?::\d+)?)", rest)
            dsn = re.search(r"\b([245]\.\d{1,3}\.\d{1,3})\b", text)
            o.statuses[addr] = Status(status=status, dsn=dsn.group(1) if dsn else "", text=text,
                                      relay=relay.group(1) if relay else "", conn_use=1, line=line)
        return {o.mail.marker: o for o in by_msgid.values()}


# ---------------------------------------------------------------- OpenSMTPD

# In mta_run.py's range, and nothing listens on its port 53: a query gets a
# port-unreachable at once and stays on loopback.
NO_DNS_SERVER = "127.0.0.219"

SMTPD_CONF = """\
# Written by tlsguard tests/e2e/mta_env.py: a private OpenSMTPD, no listener
# but its control socket (in its own mount namespace).
queue ttl {ttl}
bounce warn-interval 1h
table vusers {{ "@" = "nobody" }}
# smtp://: STARTTLS when the host offers it, plaintext when it does not.
{relays}
action "local" mda "/usr/libexec/opensmtpd/mail.mboxfile -f %{{mbox.from}} {root}/mail/%{{rcpt:lowercase|strip}}" \\
    virtual <vusers> user nobody
{matches}
match from local for domain {{ {local} }} action "local"
"""

# What runs in the new mount namespace, as root: private directories where
# smtpd has its paths compiled in, a resolv.conf naming a loopback address
# where no DNS server listens (smtpd looks up the relay's PTR name; no query
# may leave the machine), then smtpd itself (same pid).
SMTPD_NS = """\
set -e
echo $$ > "$1"
printf 'nameserver %s\\noptions timeout:1 attempts:1\\n' "$4" > "$2/resolv.conf"
mount --bind "$2/resolv.conf" /etc/resolv.conf
mount -t tmpfs -o mode=0755 tlsguard-smtpd /var/lib
mkdir -p /var/lib/opensmtpd/empty
mount --bind "$2/varspool" /var/spool
mount -t tmpfs -o mode=0755 tlsguard-smtpd /run
mount --bind "$3/usr/libexec" /usr/libexec
exec "$3/usr/sbin/smtpd" -d -f "$2/smtpd.conf"
"""

_SMTPD_ENV = re.compile(r"smtp envelope evpid=(\w+) from=<([^>]*)> to=<([^>]*)>")
_SMTPD_DELIVERY = re.compile(r"mta delivery evpid=(\w+) from=<[^>]*> to=<([^>]*)> .*? relay=\"([^\"]*)\""
                             r" delay=\S+ result=\"(\w+)\" stat=\"(.*)\"$")


class SmtpdInstance(_Instance):
    name = "opensmtpd"
    BOUNCE_SUBJECT = "Delivery status notification: failed"

    def __init__(self, *a, ttl="10m", **kw):
        super().__init__(*a, **kw)
        self.smtpd = check_smtpd(self.deps)
        self.ttl = ttl
        self.conf = os.path.join(self.root, "smtpd.conf")
        self.log_path = os.path.join(self.root, "smtpd.log")
        self.sendmail = os.path.join(self.root, "bin", "sendmail")
        self.proc = None

    def write_config(self):
        os.chmod(self.root, 0o755)
        for d in ("varspool", "bin", "mail"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        os.chown(self.maildir, NOBODY, NOBODY)
        relays, matches = [], []
        for i, (domain, addr) in enumerate(sorted(self.routes.items())):
            relays.append('action "relay%d" relay host smtp://%s helo %s' % (i, addr, self.hostname))
            matches.append('match from local for domain "%s" action "relay%d"' % (domain, i))
        self._write(self.conf, SMTPD_CONF.format(
            ttl=self.ttl, relays="\n".join(relays), matches="\n".join(matches), root=self.root,
            local=", ".join('"%s"' % d for d in self.mailbox_domains)))
        # smtpctl acts as sendmail when called by that name.
        if not os.path.islink(self.sendmail):
            os.symlink(os.path.join(self.deps, "usr/sbin/smtpctl"), self.sendmail)
        r = subprocess.run([self.smtpd, "-n", "-f", self.conf], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise MTAError("smtpd -n -f %s: %s%s" % (self.conf, r.stdout, r.stderr))

    def start(self):
        self.write_config()
        self._running = True
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["/usr/bin/unshare", "-m", "--propagation", "private", "/bin/sh", "-c", SMTPD_NS, "sh",
                 self.cgroup.procs_file, self.root, self.deps, NO_DNS_SERVER],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        self.pid = self.proc.pid
        sock_ready = False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not sock_ready:
            if self.proc.poll() is not None:
                raise MTAError("smtpd exited with %d%s" % (self.proc.returncode, self.log_tail()))
            r = subprocess.run(["/usr/bin/nsenter", "-m", "-t", str(self.pid), "--", "/bin/sh", "-c",
                                "test -S /run/smtpd.sock"], capture_output=True, timeout=10)
            sock_ready = r.returncode == 0
            time.sleep(0.1)
        if not sock_ready:
            raise MTAError("smtpd made no control socket within 20 s%s" % self.log_tail())
        if self.pid not in self.cgroup.pids():
            raise MTAError("smtpd (pid %d) is not in cgroup %s" % (self.pid, self.cgroup.path))
        return self

    def stop(self, timeout=20.0):
        if not self._running:
            return
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._wait_gone(self.pid, timeout)
        self._running = False

    def send(self, sender, recipients, subject=""):
        text, mail = self._new_mail(sender, recipients, subject)
        cmd = ["/usr/bin/nsenter", "-m", "-t", str(self.pid), "--", self.sendmail, "-i", "-f", sender, "--",
               *recipients]
        r = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise MTAError("%s failed (exit %d): %s%s" % (" ".join(cmd), r.returncode, r.stdout, r.stderr))
        return mail

    def outcomes(self, mails):
        """smtpd logs no Message-ID: a mail is known by its sender and recipients (unique per mail in
        the tests).  queue_id is the first envelope id."""
        res = {m.marker: Outcome(m) for m in mails}
        by_pair = {(m.sender.lower(), r.lower()): res[m.marker] for m in mails for r in m.recipients}
        by_evp = {}
        for line in self.log_lines():
            e = _SMTPD_ENV.search(line)
            if e:
                o = by_pair.get((e.group(2).lower(), e.group(3).lower()))
                if o is not None:
                    by_evp[e.group(1)] = o
                    o.queue_id = o.queue_id or e.group(1)
                continue
            d = _SMTPD_DELIVERY.search(line)
            if d and d.group(1) in by_evp:
                o = by_evp[d.group(1)]
                status = {"Ok": "sent", "PermFail": "bounced", "TempFail": "deferred"}.get(d.group(4), d.group(4))
                dsn = re.search(r"\b([245]\.\d{1,3}\.\d{1,3})\b", d.group(5))
                o.statuses[d.group(2).lower()] = Status(status=status, dsn=dsn.group(1) if dsn else "",
                                                        text=d.group(5), relay=d.group(3), conn_use=1, line=line)
        return res
