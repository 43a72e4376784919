/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_tls_lib.bpf.h - what the uprobes on every TLS library share
 * DESCRIPTION
 *	The uprobes on a TLS library (tg_ssl_uprobe.bpf.c: OpenSSL's libssl;
 *	tg_gnutls_uprobe.bpf.c: GnuTLS) differ only in the functions they
 *	sit on and how those pass their arguments. What they do is the same
 *	and lives here, once:
 *
 *	tg_tls_tie() ties a library's session object to its flow when the
 *	MTA gives the library its socket; tg_tls_handshake() confirms it.
 *	Sessions are keyed by (session pointer, tgid) in tg_ssl; a process
 *	that inherited a tied session across fork is tied on its first call
 *	(tg_tls_flow(), through tg_ssl_fd).
 *
 *	tg_tls_out() hands the plaintext of a write to the parser of the
 *	flow's inner conversation (struct tg_inner), before the library
 *	encrypts it. tg_tls_read_enter() and tg_tls_read_return() hand what
 *	was read to the inner reply parser on return, so that a DATA body is
 *	known as such (a 3xx reply to DATA), exactly as on the wire.
 *
 *	Ordering: a uprobe at a library's write function runs in the writing
 *	thread before the library writes the record to the socket, so a
 *	verdict it leaves in the flow is seen by tg_smtp_msg on that very
 *	write. On a flow that negotiated TLS below 1.2 (TG_FS_WEAK), or whose
 *	handshake tlsguard could not read (TG_FS_TLS_FAILED), a MAIL
 *	command of a guaranteed sender (or one that cannot be vouched for,
 *	or a MAIL line split across writes) fails the flow here: tg_smtp_msg
 *	drops the record that carries it, so no byte of it leaves, and the
 *	agent destroys the connection. A library that buffers records and
 *	writes them later (gnutls_record_cork) only moves that write later:
 *	the flow has failed before it.
 */
#ifndef TG_TLS_LIB_BPF_H
#define TG_TLS_LIB_BPF_H

#include "tg_common.bpf.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

/* Cookie of the socket behind fd in the current task, 0 if none. */
static __always_inline __u64 tg_fd_cookie(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file **fds, *file = NULL;
	struct socket *sock;
	struct sock *sk;
	unsigned int max;

	if (fd < 0)
		return 0;
	max = BPF_CORE_READ(task, files, fdt, max_fds);
	if ((unsigned int)fd >= max)
		return 0;
	fds = BPF_CORE_READ(task, files, fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	/* A socket's file and the socket point at each other. */
	if (!sock || BPF_CORE_READ(sock, file) != file)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	return BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
}

/*
 * The flow of a TLS session of the current process. A session that this
 * process never tied but that is known to have been given descriptor fd
 * elsewhere (tg_ssl_fd) is one it inherited across fork: if fd here is a
 * guarded flow's socket, the session is tied to it now. Without this, a
 * child that goes on with its parent's session (Exim's TLS proxy, forked
 * twice, for a continued connection) would write unread.
 */
static __always_inline struct tg_flow *tg_tls_flow(__u64 ssl)
{
	struct tg_ssl_key key = {
		.ssl = ssl,
		.tgid = bpf_get_current_pid_tgid() >> 32,
	};
	struct tg_flow *f;
	__u64 *cookie, c;
	__s32 *fd;

	if (bpf_current_task_under_cgroup(&tg_cgroup, 0) != 1)
		return NULL;
	cookie = bpf_map_lookup_elem(&tg_ssl, &key);
	if (cookie)
		return bpf_map_lookup_elem(&tg_flows, cookie);
	fd = bpf_map_lookup_elem(&tg_ssl_fd, &ssl);
	if (!fd)
		return NULL;
	c = tg_fd_cookie(*fd);
	if (!c)
		return NULL;
	f = bpf_map_lookup_elem(&tg_flows, &c);
	if (!f)
		return NULL;
	bpf_map_update_elem(&tg_ssl, &key, &c, BPF_ANY);
	return f;
}

/*
 * A TLS library was given the socket of a session (SSL_set_fd,
 * gnutls_transport_set_*): fd is looked up in the calling task's file
 * table, and the socket's cookie (which tg_sockops made when it tracked
 * the socket) names the flow. The session object is only a key here: no
 * library structure is read. The flow is marked as seen by the uprobes.
 */
static __always_inline void tg_tls_tie(__u64 session, long fd)
{
	struct tg_ssl_key key = {
		.ssl = session,
		.tgid = bpf_get_current_pid_tgid() >> 32,
	};
	struct tg_flow *f;
	__u64 cookie;
	__s32 fd32;

	if (bpf_current_task_under_cgroup(&tg_cgroup, 0) != 1)
		return;
	if (fd < 0 || fd > 0x7fffffff)
		return;		/* not a descriptor (a pointer, -1) */
	fd32 = (__s32)fd;
	cookie = tg_fd_cookie(fd32);
	if (!cookie)
		return;
	f = bpf_map_lookup_elem(&tg_flows, &cookie);
	if (!f)
		return;		/* not a guarded flow */
	bpf_map_update_elem(&tg_ssl, &key, &cookie, BPF_ANY);
	bpf_map_update_elem(&tg_ssl_fd, &session, &fd32, BPF_ANY);
	f->ssl_seen = 1;
}

/*
 * The handshake starts on a session (SSL_connect, gnutls_handshake): it
 * confirms the tie for sessions whose socket was given before the probes
 * were attached (an MTA started before tlsguardd).
 */
static __always_inline void tg_tls_handshake(__u64 session)
{
	struct tg_flow *f = tg_tls_flow(session);

	if (f)
		f->ssl_seen = 1;
}


/* Defined once, in tg_tls_lib.bpf.c. */
extern __u32 tg_uscan_cmds(struct tg_flow *f, __u64 buf, __u32 len);
extern __u32 tg_uscan_replies(struct tg_flow *f, __u64 buf, __u32 len);

/*
 * A flow whose TLS the uprobes must judge: one that negotiated TLS below
 * 1.2, and one whose handshake tlsguard could not read (tls-failed: the
 * library may have completed a handshake that the ServerHello parser
 * refused, at any version). Both are held for guaranteed senders.
 */
static __always_inline int tg_tls_judged(const struct tg_flow *f)
{
	return f->state == TG_FS_WEAK || f->state == TG_FS_TLS_FAILED;
}

/*
 * The thread writes num bytes of plaintext on flow f (NULL: a session the
 * uprobes cannot tie to a flow). On a judged flow it may then write the
 * records that carry them (tg_write_lic); any other write of application
 * data on such a flow is one no uprobe saw, and tg_smtp_msg fails it.
 * Grants add up while they last (a library that corks several calls'
 * data writes it later, in fewer records); a call on a session that is
 * not tied voids the thread's grant.
 */
static __always_inline void tg_tls_grant(struct tg_flow *f, __u64 num)
{
	__u64 id = bpf_get_current_pid_tgid(), now = bpf_ktime_get_ns();
	struct tg_write_lic *l, nl = {};
	__u64 n = (num + TG_TLS_PLAIN_MAX - 1) / TG_TLS_PLAIN_MAX;

	if (!f || !tg_tls_judged(f)) {
		bpf_map_delete_elem(&tg_ssl_writes, &id);
		return;
	}
	l = bpf_map_lookup_elem(&tg_ssl_writes, &id);
	if (l && l->cookie == f->cookie && l->until_ns > now)
		n += l->left;
	nl.cookie = f->cookie;
	nl.until_ns = now + TG_LICENCE_NS;
	nl.left = n > TG_LICENCE_MAX ? TG_LICENCE_MAX : (__u32)n;
	bpf_map_update_elem(&tg_ssl_writes, &id, &nl, BPF_ANY);
}

static __always_inline void tg_tls_out(void *ssl, const void *buf, __u64 num)
{
	struct tg_flow *f = tg_tls_flow((__u64)(long)ssl);
	__u32 fail;

	if (bpf_current_task_under_cgroup(&tg_cgroup, 0) == 1 && buf && num)
		tg_tls_grant(f, num);

	/*
	 * Sessions at TLS 1.2 or higher are read for the audit trail; below,
	 * a guaranteed sender's MAIL also fails the flow.
	 */
	if (!f || !buf || num == 0 ||
	    !(tg_tls_judged(f) || (f->state == TG_FS_TLS && tg_audit_on)))
		return;
	fail = tg_uscan_cmds(f, (__u64)(long)buf,
			     num > TG_SCAN_MAX ? TG_SCAN_MAX : num);
	if (!fail && tg_tls_judged(f) &&
	    (num > TG_SCAN_MAX || tg_cmd_holding(&f->inner.cmd)))
		/* a MAIL line the kernel would have to wait for: not here */
		fail = TG_WHY_BAD_MAIL;
	if (fail) {
		TG_STAT_INC(weak_held);
		tg_fail_flow(f, fail);
	}
}

static __always_inline void tg_tls_read_enter(void *ssl, void *buf,
					      __u64 num, void *readbytes)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tg_ssl_read r = {
		.ssl = (__u64)(long)ssl,
		.buf = (__u64)(long)buf,
		.num = num,
		.readbytes = (__u64)(long)readbytes,
	};
	struct tg_flow *f = tg_tls_flow(r.ssl);

	if (f && (tg_tls_judged(f) || (f->state == TG_FS_TLS && tg_audit_on)))
		bpf_map_update_elem(&tg_ssl_reads, &id, &r, BPF_ANY);
}

/*
 * The read on return: ret is the call's return value, sign-extended from
 * the library's type by the caller (SSL_read and SSL_read_ex return an
 * int, whose -1 is 0xffffffff in the register's low half and must not pass
 * for a count; gnutls_record_recv a ssize_t). With readbytes (SSL_read_ex)
 * ret is 1 on success and the count is read from there.
 */
static __always_inline void tg_tls_read_return(long ret)
{
	__u64 id = bpf_get_current_pid_tgid(), n = 0, buf;
	struct tg_ssl_read *r;
	__u32 res;
	struct tg_flow *f;

	r = bpf_map_lookup_elem(&tg_ssl_reads, &id);
	if (!r)
		return;
	f = tg_tls_flow(r->ssl);
	if (r->readbytes) {
		if (ret == 1)
			bpf_probe_read_user(&n, sizeof(n),
					    (void *)(long)r->readbytes);
	} else if (ret > 0) {
		n = (__u64)ret;
	}
	if (n > r->num)
		n = 0;		/* not a count this call could have returned */
	buf = r->buf;
	bpf_map_delete_elem(&tg_ssl_reads, &id);
	if (!f || (!tg_tls_judged(f) && f->state != TG_FS_TLS) || n == 0)
		return;
	res = tg_uscan_replies(f, buf, n > TG_SCAN_MAX ? TG_SCAN_MAX : n);
	if (res >> 8) {
		tg_fail_flow(f, res >> 8);
		return;
	}
	if (res & 1)
		tg_cmd_start_body(&f->inner.cmd);
}

#endif /* TG_TLS_LIB_BPF_H */
