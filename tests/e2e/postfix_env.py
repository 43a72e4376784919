#!/usr/bin/python3
"""A private, throw-away Postfix instance running inside a test cgroup v2.

Contract
--------
``Cgroup`` -- a cgroup v2 directory the test owns.
  * ``cgroup2_mount()`` finds the cgroup2 mount in /proc/mounts (on the
    project's hybrid hosts /sys/fs/cgroup/unified, on systemd hosts
    /sys/fs/cgroup); nothing is hard-coded.
  * ``Cgroup.create(prefix)`` makes ``<mount>/<prefix>-<pid>-<random>``;
    ``pids()`` lists its members; ``remove(timeout)`` waits for it to empty
    and removes it.  ``remove`` never kills anything: the processes in the
    cgroup belong to whoever started them (stop Postfix first).

``PostfixInstance(root, cgroup, transports, mailbox_domains, mailboxes)`` -- everything
lives under ``root`` (a directory the caller created, mode 0755 because the
``postfix`` user and the virtual delivery uid must traverse it):
  ``conf/`` (config_directory: main.cf, master.cf, transport, vmailbox),
  ``queue/`` (queue_directory), ``data/`` (data_directory), ``mail/`` (one
  mbox file per virtual mailbox), ``maillog`` (maillog_file).
  * Never touches /etc/postfix or the system's Postfix: every command gets
    ``-c``/``-C`` with our config directory.  master.cf is written from
    scratch: the usual services with chroot off and no ``inet`` listener, so
    the instance binds no port.
  * ``transports``: {domain: nexthop}, e.g.
    ``{"mx2.test": "smtp:[127.0.0.2]:25", "mx6.test": "smtp:[ipv6:::1]:25"}``
    (written to a texthash: transport map).  Any other non-local domain fails
    with a 5.x ``error:`` bounce.
  * ``mailbox_domains``: virtual mailbox domains; ``mailboxes``: addresses
    in them that get their own mbox file ``mail/<local>@<domain>`` (lower
    case; ``alice+tag@X`` and ``ALICE@x`` land in ``alice@x``).  Any other
    address in those domains lands in ``mail/catchall@<domain>``.  (A
    regexp: map with ``$1`` would be shorter, but virtual(8) refuses
    substitution in virtual_mailbox_maps, so the map is an explicit
    texthash: written at ``start()``.)
  * ``start()`` writes the config, then runs ``postfix -c CONF start`` from a
    shell that first moved itself into the cgroup, so master and all its
    children run there.  ``stop()`` runs ``postfix -c CONF stop`` and waits
    until the master pid (from the pid file) is gone and the cgroup is empty
    (it is Postfix's alone).  ``stop()`` is idempotent.
  * ``send(sender, recipients, subject, body)`` injects with the instance's
    ``sendmail -C CONF -i -f SENDER -- RCPT...`` (``sender=""`` is the null
    sender) and returns a ``Mail`` whose unique ``marker`` is in the
    Subject, the Message-ID and the body.
  * ``wait_final(mails, timeout)`` polls the maillog until every recipient of
    every mail has a final ``status=sent|bounced`` (``deferred`` is kept as
    the latest status but is not final) and returns {marker: Outcome}.
  * ``mailbox(address)`` parses that address's mbox file;
    ``bounces_for(address, marker)`` returns the DSNs in it about the mail
    with ``marker``; ``wait_bounces`` polls for them.

Raises ``PostfixMissing`` with an installation hint when Postfix is absent.
"""

import email
import email.policy
import email.utils
import mailbox
import os
import pwd
import re
import secrets
import subprocess
import time
import uuid
from dataclasses import dataclass, field

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
SENDMAIL = "/usr/sbin/sendmail"
VIRTUAL_UID = 65534  # nobody / nogroup
BOUNCE_SUBJECT = "Undelivered Mail Returned to Sender"

INSTALL_HINT = (
    "Postfix is not installed (need %s, %s, %s). Install it with `make deps` or, as in "
    "/work/shared/PLATFORM.md:\n"
    "  echo 'postfix postfix/main_mailer_type select Local only' | debconf-set-selections\n"
    "  echo 'postfix postfix/mailname string mta.test' | debconf-set-selections\n"
    "  DEBIAN_FRONTEND=noninteractive apt-get install -y postfix" % (POSTFIX, POSTCONF, SENDMAIL))


class PostfixMissing(RuntimeError):
    pass


class PostfixError(RuntimeError):
    pass


def check_postfix_installed():
    missing = [p for p in (POSTFIX, POSTCONF, SENDMAIL) if not os.access(p, os.X_OK)]
    if missing:
        raise PostfixMissing(INSTALL_HINT)


# ---------------------------------------------------------------- cgroup v2

def cgroup2_mount():
    """The mount point of the cgroup v2 hierarchy, from /proc/mounts."""
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "cgroup2":
                # /proc/mounts escapes blanks as octal (\040)
                return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
    raise RuntimeError("no cgroup2 file system in /proc/mounts (mount -t cgroup2 none /sys/fs/cgroup/unified)")


class Cgroup:
    def __init__(self, path):
        self.path = path

    @classmethod
    def create(cls, prefix="tlsguard-e2e"):
        path = os.path.join(cgroup2_mount(), "%s-%d-%s" % (prefix, os.getpid(), secrets.token_hex(3)))
        os.mkdir(path)
        return cls(path)

    @property
    def procs_file(self):
        return os.path.join(self.path, "cgroup.procs")

    def pids(self):
        try:
            with open(self.procs_file) as f:
                return [int(x) for x in f.read().split()]
        except FileNotFoundError:
            return []

    def wait_empty(self, timeout):
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        return not self.pids()

    def remove(self, timeout=10.0):
        """Wait for the cgroup to empty, then rmdir it.  Raises if it cannot."""
        if not os.path.isdir(self.path):
            return
        if not self.wait_empty(timeout):
            raise RuntimeError("cgroup %s still has processes %s" % (self.path, self.pids()))
        os.rmdir(self.path)

    def __repr__(self):
        return "Cgroup(%r)" % self.path


# ------------------------------------------------------------ log outcomes

@dataclass
class Status:
    status: str  # sent | bounced | deferred | expired
    dsn: str
    text: str  # the parenthesised explanation
    relay: str
    conn_use: int  # >1 when Postfix reused a cached connection; 1 for a fresh one
    line: str


@dataclass
class Mail:
    marker: str
    sender: str
    recipients: list
    message_id: str
    subject: str
    injected_at: float = 0.0


@dataclass
class Outcome:
    mail: Mail
    queue_id: str = None
    statuses: dict = field(default_factory=dict)  # recipient (lower case) -> latest Status

    def status_of(self, rcpt):
        return self.statuses.get(rcpt.lower())

    @property
    def final(self):
        return self.queue_id is not None and all(
            (s := self.statuses.get(r.lower())) is not None and s.status in ("sent", "bounced", "expired")
            for r in self.mail.recipients)


_LOG_RE = re.compile(r"\bpostfix[^\s/]*/([\w-]+)\[(\d+)\]: ([0-9A-F]{6,}): (.*)$")
_STATUS_RE = re.compile(r"to=<([^>]*)>,(?: orig_to=<[^>]*>,)? relay=([^,]*),(?: conn_use=(\d+),)?"
                        r" .*?dsn=([\d.]+), status=(\w+) \((.*)\)$")


# ---------------------------------------------------------------- Postfix

MASTER_CF = """\
# Written by tlsguard tests/e2e/postfix_env.py: no inet listener, chroot off.
# service type  private unpriv  chroot  wakeup  maxproc command + args
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
local      unix  -       n       n       -       -       local
virtual    unix  -       n       n       -       -       virtual
lmtp       unix  -       -       n       -       -       lmtp
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
"""


def read_mbox(path):
    """All messages in the mbox file at ``path``, as email.message.EmailMessage ([] if none yet)."""
    if not os.path.exists(path):
        return []
    box = mailbox.mbox(path, factory=None, create=False)
    try:
        return [email.message_from_bytes(box.get_bytes(key), policy=email.policy.default) for key in box.keys()]
    except (mailbox.Error, OSError):
        return []  # being written right now; the caller polls again
    finally:
        box.close()


class MailLog:
    """What a test reads of any MTA instance: its log, its mailboxes, its bounces.

    A subclass sets ``log_path`` and ``BOUNCE_SUBJECT`` and defines
    ``mailbox_path(address)`` and ``outcomes(mails)`` (the parse of its log)."""
    BOUNCE_SUBJECT = None
    log_path = None

    def log_lines(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def log_tail(self, n=30):
        lines = self.log_lines()[-n:]
        return ("\n--- %s (last %d lines) ---\n" % (self.log_path, len(lines)) + "\n".join(lines)) if lines else ""

    def wait_final(self, mails, timeout):
        """Poll until every recipient of every mail has a final status (or timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.outcomes(mails)
            if all(o.final for o in res.values()) or time.monotonic() >= deadline:
                return res
            time.sleep(0.2)

    def mailbox(self, address):
        """All messages in ``address``'s mailbox, as email.message.EmailMessage."""
        return read_mbox(self.mailbox_path(address))

    def bounces_for(self, address, marker):
        """DSNs in ``address``'s mailbox that return the mail carrying ``marker``."""
        return [m for m in self.mailbox(address)
                if self.BOUNCE_SUBJECT in str(m.get("Subject", "")) and marker in m.as_string()]


class PostfixInstance(MailLog):
    BOUNCE_SUBJECT = BOUNCE_SUBJECT

    def __init__(self, root, cgroup, transports, mailbox_domains=("mta.test",), mailboxes=(),
                 hostname="mta.test", extra_main=None):
        check_postfix_installed()
        self.root = os.path.abspath(root)
        self.cgroup = cgroup
        self.transports = dict(transports)
        self.mailbox_domains = list(mailbox_domains)
        self.mailboxes = sorted({mailbox_name(a) for a in mailboxes})
        self.hostname = hostname
        self.extra_main = dict(extra_main or {})
        self.conf = os.path.join(self.root, "conf")
        self.queue = os.path.join(self.root, "queue")
        self.data = os.path.join(self.root, "data")
        self.maildir = os.path.join(self.root, "mail")
        self.maillog = self.log_path = os.path.join(self.root, "maillog")
        self.master_pid = None
        self._running = False

    # ---- configuration ---------------------------------------------------

    def main_cf(self):
        domains = self.mailbox_domains
        params = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.root,  # postlogd refuses paths outside these
            "myhostname": self.hostname,
            "myorigin": "$myhostname",
            "mydestination": "",
            # There is no listener; but the smtp client treats every address in
            # inet_interfaces as "myself" and refuses [::1] with "mail for ::1 loops
            # back to myself" when this is "all" or "loopback-only".
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "all",
            "mynetworks": "127.0.0.0/8 [::1]/128",
            "relayhost": "",
            "relay_domains": "",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "recipient_delimiter": "+",
            "transport_maps": "texthash:" + os.path.join(self.conf, "transport"),
            "default_transport": "error:5.1.2 no route for this domain in the e2e transport map",
            "virtual_mailbox_domains": ", ".join(domains),
            "virtual_mailbox_base": self.maildir,
            "virtual_mailbox_maps": "texthash:" + os.path.join(self.conf, "vmailbox"),
            "virtual_uid_maps": "static:%d" % VIRTUAL_UID,
            "virtual_gid_maps": "static:%d" % VIRTUAL_UID,
            "virtual_mailbox_limit": "0",
            "smtp_tls_security_level": "may",
            "smtp_tls_loglevel": "1",
            # Retry a deferral within seconds, not minutes.
            "queue_run_delay": "2s",
            "minimal_backoff_time": "2s",
            "maximal_backoff_time": "10s",
            # Do not slow down injection when many mails arrive at once.
            "in_flow_delay": "0s",
        }
        params.update(self.extra_main)
        return "# Written by tlsguard tests/e2e/postfix_env.py\n" + "".join(
            "%s = %s\n" % kv for kv in params.items())

    def write_config(self):
        # queue_directory itself must exist (root-owned); `postfix start` creates the rest.
        for d in (self.conf, self.maildir, self.queue):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.root, 0o755)
        # The virtual agent delivers as VIRTUAL_UID and needs to create files (and dot-locks).
        os.chown(self.maildir, VIRTUAL_UID, VIRTUAL_UID)
        self._write("main.cf", self.main_cf())
        self._write("master.cf", MASTER_CF)
        self._write("transport", "".join("%s\t%s\n" % kv for kv in self.transports.items()))
        self._write("vmailbox", "".join("%s\t%s\n" % (a, a) for a in self.mailboxes) + "".join(
            "@%s\tcatchall@%s\n" % (d, d) for d in self.mailbox_domains))
        # data_directory is not in postfix-files: create it for the mail_owner.
        os.makedirs(self.data, exist_ok=True)
        pw = pwd.getpwnam("postfix")
        os.chown(self.data, pw.pw_uid, pw.pw_gid)
        os.chmod(self.data, 0o700)

    def _write(self, name, text):
        with open(os.path.join(self.conf, name), "w") as f:
            f.write(text)

    # ---- lifecycle -------------------------------------------------------

    def postfix(self, *args, check=True, timeout=60):
        r = subprocess.run([POSTFIX, "-c", self.conf, *args], capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise PostfixError("postfix -c %s %s failed (exit %d): %s%s" % (
                self.conf, " ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def start(self):
        """Write the config and start master inside the cgroup; wait until it runs."""
        self.write_config()  # `postfix start` runs the integrity check (post-install create-missing)
        # The shell joins the cgroup, then becomes `postfix start`; master daemonizes
        # from there and every Postfix daemon inherits the cgroup.
        script = 'echo $$ > "$1" && exec "$2" -c "$3" start'
        self._running = True  # from here on, stop() must clean up (even a half-started master)
        # `postfix start` runs Postfix's integrity checks (dozens of processes): a minute or
        # more in an emulated VM (make vmtest) on a loaded machine.
        r = subprocess.run(["/bin/sh", "-c", script, "sh", self.cgroup.procs_file, POSTFIX, self.conf],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise PostfixError("postfix start failed (exit %d): %s%s%s" % (
                r.returncode, r.stdout, r.stderr, self.log_tail()))
        self.master_pid = self._read_master_pid()
        if self.master_pid is None or self.master_pid not in self.cgroup.pids():
            raise PostfixError("Postfix master (pid %s) is not in cgroup %s (members: %s)" % (
                self.master_pid, self.cgroup.path, self.cgroup.pids()))
        return self

    def _read_master_pid(self):
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, timeout=20.0):
        """Stop master and wait until it and its children are gone.  Idempotent."""
        if not self._running:
            return
        pid = self.master_pid or self._read_master_pid()
        self.postfix("stop", check=False)
        deadline = time.monotonic() + timeout
        while pid is not None and _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid is not None and _pid_alive(pid):
            raise PostfixError("Postfix master pid %d did not exit after postfix stop" % pid)
        # Children exit when they notice that master is gone.
        if not self.cgroup.wait_empty(max(1.0, deadline - time.monotonic())):
            raise PostfixError("Postfix processes left in %s: %s" % (self.cgroup.path, self.cgroup.pids()))
        self._running = False

    # ---- injection -------------------------------------------------------

    def send(self, sender, recipients, subject="", body="", marker=None, extra_headers=None):
        """Inject one message with sendmail; return its ``Mail`` record."""
        marker = marker or "m-" + uuid.uuid4().hex[:16]
        message_id = "<%s@e2e.%s>" % (marker, self.hostname)
        subject = ("%s %s" % (subject, marker)).strip()
        headers = [
            ("From", sender if sender else "MAILER-DAEMON@" + self.hostname),
            ("To", ", ".join(recipients)),
            ("Subject", subject),
            ("Message-ID", message_id),
            ("Date", email.utils.formatdate(localtime=True)),
            ("X-E2E-Marker", marker),
        ] + list(extra_headers or [])
        text = "".join("%s: %s\n" % h for h in headers) + "\n%s\nmarker: %s\n" % (body, marker)
        cmd = [SENDMAIL, "-C", self.conf, "-i", "-f", sender, "--", *recipients]
        r = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise PostfixError("%s failed (exit %d): %s%s" % (" ".join(cmd), r.returncode, r.stdout, r.stderr))
        return Mail(marker, sender, list(recipients), message_id, subject, time.time())

    # ---- the log ---------------------------------------------------------

    def outcomes(self, mails):
        """Parse the log once: {marker: Outcome} for ``mails``."""
        by_msgid = {m.message_id: Outcome(m) for m in mails}
        by_qid = {}
        for line in self.log_lines():
            m = _LOG_RE.search(line)
            if not m:
                continue
            prog, qid, rest = m.group(1), m.group(3), m.group(4)
            if prog == "cleanup" and rest.startswith("message-id="):
                o = by_msgid.get(rest[len("message-id="):].strip())
                if o is not None and o.queue_id is None:
                    o.queue_id = qid
                    by_qid[qid] = o
                continue
            o = by_qid.get(qid)
            s = _STATUS_RE.search(rest) if o is not None else None
            if s:
                o.statuses[s.group(1).lower()] = Status(
                    status=s.group(5), dsn=s.group(4), text=s.group(6), relay=s.group(2),
                    conn_use=int(s.group(3) or 1), line=line)
        return {o.mail.marker: o for o in by_msgid.values()}

    # ---- mailboxes -------------------------------------------------------

    def mailbox_path(self, address):
        """The mbox file that mail to ``address`` lands in."""
        name = mailbox_name(address)
        if name not in self.mailboxes:
            name = "catchall@" + name.rpartition("@")[2]
        return os.path.join(self.maildir, name)

    def wait_bounces(self, wanted, timeout):
        """wanted: [(address, marker)]; poll until each has a bounce; return {(a, m): [msgs]}."""
        deadline = time.monotonic() + timeout
        while True:
            res = {w: self.bounces_for(*w) for w in wanted}
            if all(res.values()) or time.monotonic() >= deadline:
                return res
            time.sleep(0.2)


def mailbox_name(address):
    """'Alice+News@MTA.test' -> 'alice@mta.test' (the virtual map key and file name)."""
    local, _, domain = address.rpartition("@")
    return "%s@%s" % (local.split("+", 1)[0].lower(), domain.lower())


def bounce_report(msg):
    """The human-readable and delivery-status parts of a DSN, without the returned message."""
    parts = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            parts.append("\n".join(str(block) for block in part.get_payload()))
        elif ctype == "text/plain" and not parts:
            parts.append(part.get_content())
        elif ctype in ("message/rfc822", "text/rfc822-headers"):
            break
    return "\n".join(parts)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is as good as gone
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
