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
 *	known as such (354), exactly as on the wire.
 *
 *	Ordering: a uprobe at a library's write function runs in the writing
 *	thread before the library writes the record to the socket, so a
 *	verdict it leaves in the flow is seen by tg_smtp_msg on that very
 *	write. On a flow that negotiated TLS below 1.2 (TG_FS_WEAK), a MAIL
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


struct tg_uscan {
	__u64 buf;		/* user address */
	struct tg_flow *f;
	__u32 len;
	__u32 fail;		/* the flow must fail: TG_WHY_* */
	__u32 reply;		/* scanning replies, not commands */
	__u32 body;
	__u32 line_off;		/* where the line in progress began */
	__u32 line_seen;	/* a line started in these bytes */
	__u8 blk[2 * TG_BLOCK];
};

/* A line that ended at byte i (LF) of the user buffer: report it. */
static __always_inline void tg_emit_uline(struct tg_uscan *s,
					  struct tg_flow *f, __u32 i,
					  __u32 flags, __u32 unused)
{
	__u32 start = s->line_seen ? s->line_off : 0;
	__u64 n = i > start ? i - start : 0;
	unsigned char last = 0;

	if (n)
		bpf_probe_read_user(&last, 1, (void *)(s->buf + i - 1));
	if (n && last == '\r')
		n--;
	tg_emit_line(f, flags | TG_LINE_TLS | (s->line_seen ? 0 : TG_LINE_CUT),
		     s->buf + start, n, 1);
}

static long tg_uscan_byte(__u32 i, void *ctx)
{
	struct tg_uscan *s = ctx;
	struct tg_flow *f = s->f;
	struct tg_inner *in;
	unsigned char c;
	int ev;

	if (i >= s->len || !f)
		return 1;
	in = &f->inner;
	if (tg_refill(s->blk, s->buf, i, s->len, 1)) {
		s->fail = TG_WHY_BAD_MAIL;
		return 1;
	}
	c = s->blk[i & (TG_BLOCK - 1)];
	if (s->reply) {
		if (in->reply.line_len == 0) {
			s->line_off = i;
			s->line_seen = 1;
		}
		if (tg_reply_feed(&in->reply, c) != TG_REPLY_FINAL)
			return 0;
		tg_emit_uline(s, f, i, TG_LINE_REPLY, in->reply.line_len);
		in->replies++;
		if (in->data_cmd && in->replies == in->data_cmd + 1) {
			s->body = in->reply.code == 354;
			in->data_cmd = 0;
		}
		return 0;
	}
	if (in->cmd.mode == TG_MODE_CMD && in->cmd.line_len == 0) {
		s->line_off = i;
		s->line_seen = 1;
	}
	ev = tg_cmd_feed(&in->cmd, c);
	switch (ev) {
	case TG_CMD_NONE:
	case TG_CMD_CHUNK_END:
		return 0;
	case TG_CMD_MAIL:
		tg_keep_sender(f, &in->cmd, s->buf, s->line_off, s->len, 1);
		if (f->state == TG_FS_WEAK && tg_guaranteed(&in->cmd)) {
			tg_emit_uline(s, f, i, TG_LINE_HELD, 0);
			s->fail = TG_WHY_WEAK_TLS;
			return 1;
		}
		break;
	case TG_CMD_MAIL_BAD:
		if (f->state == TG_FS_WEAK) {
			tg_emit_uline(s, f, i, TG_LINE_HELD, 0);
			s->fail = TG_WHY_BAD_MAIL;
			return 1;
		}
		break;
	case TG_CMD_BODY_END:
		tg_emit_line(f, TG_LINE_END | TG_LINE_TLS, 0, 0, 0);
		in->cmds++;
		return 0;
	case TG_CMD_LINE:
		if (in->cmd.verb == TG_VERB_DATA)
			in->data_cmd = in->cmds;
		break;
	}
	tg_emit_uline(s, f, i, 0, 0);
	in->cmds++;
	return 0;
}

static __always_inline void tg_tls_out(void *ssl, const void *buf, __u64 num)
{
	struct tg_uscan s = {};
	struct tg_flow *f = tg_tls_flow((__u64)(long)ssl);

	/*
	 * Sessions at TLS 1.2 or higher are read for the audit trail; below,
	 * a guaranteed sender's MAIL also fails the flow.
	 */
	if (!f || !buf || num == 0 ||
	    !(f->state == TG_FS_WEAK || (f->state == TG_FS_TLS && tg_audit_on)))
		return;
	s.buf = (__u64)(long)buf;
	s.f = f;
	s.len = num > TG_SCAN_MAX ? TG_SCAN_MAX : num;
	bpf_loop(s.len, tg_uscan_byte, &s, 0);
	if (!s.fail && f->state == TG_FS_WEAK &&
	    (num > TG_SCAN_MAX || tg_cmd_holding(&f->inner.cmd)))
		/* a MAIL line the kernel would have to wait for: not here */
		s.fail = TG_WHY_BAD_MAIL;
	if (s.fail) {
		TG_STAT_INC(weak_held);
		tg_fail_flow(f, s.fail);
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

	if (f && (f->state == TG_FS_WEAK || (f->state == TG_FS_TLS && tg_audit_on)))
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
	__u64 id = bpf_get_current_pid_tgid(), n = 0;
	struct tg_uscan s = {};
	struct tg_ssl_read *r;
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
	s.buf = r->buf;
	bpf_map_delete_elem(&tg_ssl_reads, &id);
	if (!f || (f->state != TG_FS_WEAK && f->state != TG_FS_TLS) || n == 0)
		return;
	s.f = f;
	s.reply = 1;
	s.len = n > TG_SCAN_MAX ? TG_SCAN_MAX : n;
	bpf_loop(s.len, tg_uscan_byte, &s, 0);
	if (s.body)
		tg_cmd_start_body(&f->inner.cmd);
}

#endif /* TG_TLS_LIB_BPF_H */
