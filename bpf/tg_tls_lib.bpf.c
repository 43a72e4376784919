// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_tls_lib - the SMTP scanner of the TLS library uprobes
 * DESCRIPTION
 *	tg_uscan_cmds() and tg_uscan_replies() run the parsers of a
 *	flow's inner conversation (struct tg_inner) over what the MTA hands its TLS library to write, or what
 *	the library returned from a read (reply != 0), in the MTA's memory.
 *	It is shared by every uprobe of tg_ssl_uprobe.bpf.c and
 *	tg_gnutls_uprobe.bpf.c (see tg_tls_lib.bpf.h) and defined here once.
 *
 *	On a flow that negotiated TLS below 1.2, or whose handshake
 *	tlsguard could not read (tg_tls_judged()), a MAIL command of a
 *	guaranteed sender, or one the parser cannot vouch for, sets
 *	res->fail (TG_WHY_*): the caller fails the flow before the library
 *	writes the record. In a read, res->body says that the host accepted
 *	DATA: the caller starts the body in the command parser.
 *
 *	A global function: the verifier checks it once per program, on its
 *	own, whatever state the probe that calls it is in.
 */
#include "tg_tls_lib.bpf.h"

struct tg_uscan {
	struct tg_flow *f;
	__u32 fail;		/* the flow must fail: TG_WHY_* */
	__u32 body;		/* DATA accepted: start the body */
	__u32 line_off;		/* where the line in progress began */
	__u32 line_seen;	/* a line started in these bytes */
	__u32 skip_to;		/* bytes before it are passed over */
	__u32 pad;
	struct tg_blk blk;
};

/* A line that ended at byte i (LF) of the user buffer: report it. */
static __always_inline void tg_emit_uline(struct tg_uscan *s,
					  struct tg_flow *f, __u32 i,
					  __u32 flags)
{
	__u32 start = s->line_seen ? s->line_off : 0;
	__u64 n = i > start ? i - start : 0;
	unsigned char last = 0;

	if (!tg_audit_on)
		return;
	if (n)
		bpf_probe_read_user(&last, 1, (void *)(s->blk.base + i - 1));
	if (n && last == '\r')
		n--;
	tg_emit_line(f, flags | TG_LINE_TLS | (s->line_seen ? 0 : TG_LINE_CUT),
		     s->blk.base + start, n, 1);
}

/* Byte i of a write (bpf_loop's index: see tg_smtp_msg's tg_scan_byte). */
static long tg_uscan_cmd_byte(__u32 i, void *ctx)
{
	struct tg_uscan *s = ctx;
	struct tg_flow *f = s->f;
	struct tg_inner *in;
	__u32 n;
	int ev;

	if (!f || i >= s->blk.len)
		return 1;
	if (i < s->skip_to)
		return 0;
	in = &f->inner;
	if (in->cmd.mode == TG_MODE_CHUNK) {
		n = tg_cmd_skip(&in->cmd, &s->blk, i);
		if (n) {
			s->skip_to = i + n;
			return 0;
		}
	}
	if (tg_blk_get(&s->blk, i, 1)) {
		s->fail = TG_WHY_BAD_MAIL;
		return 1;
	}
	if (in->cmd.mode == TG_MODE_BODY) {
		n = tg_cmd_skip(&in->cmd, &s->blk, i);
		if (n) {
			s->skip_to = i + n;
			return 0;
		}
	}
	if (in->cmd.mode == TG_MODE_CMD && in->cmd.line_len == 0) {
		s->line_off = i;
		s->line_seen = 1;
	}
	ev = tg_cmd_step(&in->cmd, tg_blk_at(&s->blk, i));
	switch (ev) {
	case TG_CMD_NONE:
	case TG_CMD_CHUNK_END:
		return 0;
	case TG_CMD_MAIL:
		tg_keep_sender(f, &in->cmd, s->blk.base, s->line_off,
			       s->blk.len, 1);
		if (tg_tls_judged(f) && tg_guaranteed(&in->cmd)) {
			tg_emit_uline(s, f, i, TG_LINE_HELD);
			s->fail = TG_WHY_WEAK_TLS;
			return 1;
		}
		break;
	case TG_CMD_MAIL_BAD:
		if (tg_tls_judged(f)) {
			tg_emit_uline(s, f, i, TG_LINE_HELD);
			s->fail = TG_WHY_BAD_MAIL;
			return 1;
		}
		break;
	case TG_CMD_BODY_END:
		tg_emit_line(f, TG_LINE_END | TG_LINE_TLS, 0, 0, 0);
		in->cmds++;
		return 0;
	case TG_CMD_BODY_AMBIGUOUS:
	case TG_CMD_CHUNK_BAD:
		/* framed differently by servers: judged flows fail closed */
		if (tg_tls_judged(f)) {
			s->fail = TG_WHY_DESYNC;
			return 1;
		}
		return 0;
	case TG_CMD_LINE:
		if (in->cmd.verb == TG_VERB_DATA)
			in->data_cmd = in->cmds;
		break;
	}
	tg_emit_uline(s, f, i, 0);
	in->cmds++;
	return 0;
}

/* Byte i of a read. */
static long tg_uscan_reply_byte(__u32 i, void *ctx)
{
	struct tg_uscan *s = ctx;
	struct tg_flow *f = s->f;
	struct tg_inner *in;
	int ev;

	if (!f || i >= s->blk.len || tg_blk_get(&s->blk, i, 1))
		return 1;
	in = &f->inner;
	if (in->reply.line_len == 0) {
		s->line_off = i;
		s->line_seen = 1;
	}
	ev = tg_reply_step(&in->reply, tg_blk_at(&s->blk, i));
	if (ev == TG_REPLY_AMBIGUOUS) {
		/* as on the wire (see tg_reply_skb): judged flows fail */
		s->fail = tg_tls_judged(f) ? TG_WHY_DESYNC : 0;
		return 1;
	}
	if (ev != TG_REPLY_FINAL)
		return 0;
	tg_emit_uline(s, f, i, TG_LINE_REPLY);
	in->replies++;
	if (in->data_cmd && in->replies == in->data_cmd + 1) {
		in->data_cmd = 0;
		switch (tg_reply_data(&in->reply)) {
		case TG_DATA_BODY:
			s->body = 1;
			break;
		case TG_DATA_UNSURE:
			s->fail = tg_tls_judged(f) ? TG_WHY_DESYNC : 0;
			return 1;
		}
	}
	return 0;
}

/*
 * The parsers of f's inner conversation over the first len bytes at buf,
 * in the MTA's memory: commands (tg_uscan_cmds, which returns the
 * TG_WHY_* for which the flow must fail, or 0) or replies
 * (tg_uscan_replies, which returns bit 0 set when the host accepted
 * DATA, and in bits 8 to 15 the TG_WHY_* for which a judged flow must
 * fail: a reply the MTA's client may read otherwise than the parser).
 */
__noinline __u32 tg_uscan_cmds(struct tg_flow *f, __u64 buf, __u32 len)
{
	struct tg_uscan s = {};

	if (!f)
		return TG_WHY_BAD_MAIL;
	if (len > TG_SCAN_MAX)
		len = TG_SCAN_MAX;
	s.f = f;
	s.blk.base = buf;
	s.blk.len = len;
	bpf_loop(len, tg_uscan_cmd_byte, &s, 0);
	return s.fail;
}

__noinline __u32 tg_uscan_replies(struct tg_flow *f, __u64 buf, __u32 len)
{
	struct tg_uscan s = {};

	if (!f)
		return 0;
	if (len > TG_SCAN_MAX)
		len = TG_SCAN_MAX;
	s.f = f;
	s.blk.base = buf;
	s.blk.len = len;
	bpf_loop(len, tg_uscan_reply_byte, &s, 0);
	return s.body | s.fail << 8;
}
