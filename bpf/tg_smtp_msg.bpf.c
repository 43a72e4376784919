// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_smtp_msg - read the SMTP commands the MTA writes; hold back a
 *	guaranteed sender's MAIL FROM on a flow without TLS
 * DESCRIPTION
 *	sk_msg verdict on tg_socks: runs for every write on a tracked flow
 *	before any byte of it is queued for the wire, and for every write
 *	the agent makes on an injection socket.
 *
 *	On a plaintext flow the bytes go through tg_cmd_feed(). A MAIL
 *	command whose sender is guaranteed (or that cannot be vouched for)
 *	diverts the flow: the command and all that follows it on the flow go
 *	to the agent through an injection slot, never to the host. Bytes
 *	before the MAIL line in the same write pass first (apply_bytes); a
 *	write that ends inside a line that may be a MAIL command is corked
 *	until the line is complete, so no byte of a held envelope can leave
 *	early, however the MTA splits its writes.
 *
 *	A flow is diverted only while the host owes no reply: the agent's
 *	replies must be the next ones the MTA reads. A guaranteed MAIL that
 *	was pipelined behind commands still unanswered, or that finds no free
 *	injection slot, fails the flow instead: this write and every later
 *	one are dropped, the MTA sees a write error and defers the mail.
 *
 *	Writes on an injection socket are the agent's replies: they are
 *	redirected into the receive queue of the flow the slot serves.
 *
 *	The parser state is saved in the flow only up to bytes that were
 *	passed (f->mark); held bytes are parsed again from the saved state
 *	when the program runs on them next.
 *
 *	A write that begins inside a DATA body is read a word at a time up to
 *	the body's end (tg_scan_body); what follows the end runs again as
 *	commands. A body line or a BDAT line that servers frame differently
 *	fails the flow: tlsguard could not tell commands from message after it.
 *
 *	Every loop runs in a global function whose findings come back packed
 *	in its return value: see bpf/tg_parse.bpf.c for why the verifier's
 *	cost then stays small and the same on every kernel.
 */
#include "tg_common.bpf.h"

/*
 * tg_scan_cmds() returns its findings packed into one scalar, so that
 * nothing the caller acts on passes through memory the verifier would
 * have to track across the call (kernels before 6.x did not always see
 * that a global function wrote its callers' stack).
 */
#define TG_SCAN_DIVERT		0x1ULL	/* hold the line at TG_SCAN_OFF */
#define TG_SCAN_LINE		0x2ULL	/* a line started in these bytes */
#define TG_SCAN_LOST		0x4ULL	/* lost count of the conversation */
#define TG_SCAN_TAKEN		0x8ULL	/* tg_cmd_one() read the write */
#define TG_SCAN_WHY(r)		((__u32)((r) >> 8) & 0xff)
#define TG_SCAN_OFF(r)		((__u32)((r) >> 32))	/* where it started */

/*
 * The findings are kept as the TG_SCAN_* bits they are returned as, and
 * put together without a branch: a branch on each would make the
 * verifier follow the scan once per combination of their values.
 */
struct tg_scan {
	struct tg_flow *f;
	__u32 found;		/* TG_SCAN_DIVERT, _LINE, _LOST */
	__u32 why;
	__u32 line_off;		/* where the line in progress started */
	__u32 skip_to;		/* bytes before it are passed over */
	struct tg_blk blk;
};

/* A command line that ended at byte i (its LF) passes: report it. */
static __always_inline void tg_emit_cmd(struct tg_scan *s, struct tg_flow *f,
					__u32 i)
{
	__u32 start = (s->found & TG_SCAN_LINE) ? s->line_off : 0;
	__u64 n = i > start ? i - start : 0;

	if (!tg_audit_on)
		return;
	if (n && f->cmd.cr)
		n--;
	tg_emit_line(f, (s->found & TG_SCAN_LINE) ? 0 : TG_LINE_CUT,
		     s->blk.base + start,
		     n, 0);
}

/* The flow's state where a line starts, for tg_rewind(). */
static __always_inline void tg_mark_flow(struct tg_flow *f)
{
	f->mark.cmd = f->cmd;
	f->mark.cmds = f->cmds;
	f->mark.data_cmd = f->data_cmd;
	f->mark.starttls_cmd = f->starttls_cmd;
}

/* A line starts at byte i: remember where, and the flow's state there. */
static __always_inline void tg_mark(struct tg_scan *s, struct tg_flow *f,
				    __u32 i)
{
	s->line_off = i;
	s->found |= TG_SCAN_LINE;
	tg_mark_flow(f);
}

/*
 * A command line has ended (its LF) with event ev, not TG_CMD_NONE,
 * TG_CMD_CHUNK_END or TG_CMD_BODY_END; the line began at line_off of the
 * len bytes at base. Returns what stops the scan there: TG_SCAN_DIVERT
 * with the reason in bits 8-15, or TG_SCAN_LOST; 0 when the line passes,
 * counted (the caller reports it, then counts it in f->cmds).
 */
static __always_inline __u32 tg_cmd_ended(struct tg_flow *f, int ev,
					  __u64 base, __u32 line_off,
					  __u32 len)
{
	switch (ev) {
	case TG_CMD_MAIL:
		/* whole here: a MAIL line is corked until it is */
		tg_keep_sender(f, &f->cmd, base, line_off, len, 0);
		if (tg_guaranteed(&f->cmd))
			return TG_SCAN_DIVERT | TG_WHY_NO_TLS << 8;
		TG_STAT_INC(passed_mail);
		break;
	case TG_CMD_MAIL_NULL:
		TG_STAT_INC(passed_mail);
		break;
	case TG_CMD_MAIL_BAD:
		return TG_SCAN_DIVERT | TG_WHY_BAD_MAIL << 8;
	case TG_CMD_BODY_AMBIGUOUS:
	case TG_CMD_CHUNK_BAD:
		/*
		 * A body end or a BDAT line that servers frame differently:
		 * what follows may be commands to the host and message to
		 * tlsguard, or the other way round.
		 */
		return TG_SCAN_LOST;
	case TG_CMD_LINE:
		if (f->cmd.verb == TG_VERB_DATA)
			f->data_cmd = f->cmds;
		else if (f->cmd.verb == TG_VERB_STARTTLS)
			f->starttls_cmd = f->cmds;
		else if (f->cmd.verb == TG_VERB_EHLO ||
			 f->cmd.verb == TG_VERB_HELO)
			f->ehlo_cmd = f->cmds;
		break;
	}
	return 0;
}

/*
 * Byte i of the write. The position is bpf_loop's index, which the
 * verifier does not know, so it checks this callback for one state of
 * the scanner, not one per byte; bytes that tg_cmd_skip() passes over
 * still cost a call each, but only that.
 */
static long tg_scan_byte(__u32 i, void *ctx)
{
	struct tg_scan *s = ctx;
	struct tg_flow *f = s->f;
	__u32 n, stop;
	int ev;

	if (!f || i >= s->blk.len)
		return 1;
	if (i < s->skip_to)
		return 0;
	if (f->cmd.mode == TG_MODE_CHUNK) {
		n = tg_cmd_skip(&f->cmd, &s->blk, i);
		if (n) {
			s->skip_to = i + n;
			return 0;
		}
	}
	if (tg_blk_get(&s->blk, i, 0)) {
		/* Cannot read it: hold it, as a MAIL we cannot vouch for. */
		s->found |= TG_SCAN_DIVERT;
		s->why = TG_WHY_BAD_MAIL;
		return 1;
	}
	if (f->cmd.mode == TG_MODE_BODY) {
		n = tg_cmd_skip(&f->cmd, &s->blk, i);
		if (n) {
			s->skip_to = i + n;
			return 0;
		}
	}
	if (f->cmd.mode == TG_MODE_CMD && f->cmd.line_len == 0) {
		tg_mark(s, f, i);
		if (f->data_cmd) {
			/*
			 * Bytes after DATA before its reply: the client cannot
			 * know yet whether they are message or commands (RFC
			 * 2920: DATA ends a pipelined group). Not vouched for.
			 */
			s->found |= TG_SCAN_DIVERT;
			s->why = TG_WHY_BAD_MAIL;
			return 1;
		}
	}
	ev = tg_cmd_step(&f->cmd, tg_blk_at(&s->blk, i));
	if (ev == TG_CMD_NONE || ev == TG_CMD_CHUNK_END)
		return 0;
	if (ev == TG_CMD_BODY_END) {
		tg_emit_line(f, TG_LINE_END, 0, 0, 0);
		f->cmds++;
		return 0;
	}
	stop = tg_cmd_ended(f, ev, s->blk.base, s->line_off, s->blk.len);
	if (stop) {
		s->found |= stop & 0xff;
		s->why = stop >> 8;
		return 1;
	}
	tg_emit_cmd(s, f, i);
	/* Each command line and each DATA body earns one reply. */
	f->cmds++;
	return 0;
}

/*
 * Run the command parser of flow f over the first len bytes of the
 * write (made linear by the caller). Returns TG_SCAN_* bits; f->mark
 * holds the state at the start of the line in progress.
 *
 * A global function: the verifier checks it once, on its own, with f as
 * plain memory and the scalars unknown, so what it costs does not depend
 * on the paths by which tg_smtp_msg reaches it (each of those would
 * otherwise verify the loop and its callback again).
 */
__noinline __u64 tg_scan_cmds(struct sk_msg_md *msg, struct tg_flow *f,
			      __u32 len)
{
	struct tg_scan s = {};

	if (!f)
		return TG_SCAN_DIVERT | TG_WHY_BAD_MAIL << 8;
	if (len > TG_SCAN_MAX)
		len = TG_SCAN_MAX;
	s.f = f;
	s.blk.base = (__u64)(long)msg->data;
	s.blk.len = len;
	f->cmd.no_chunking = !f->chunking_offered;
	tg_mark(&s, f, 0);
	s.found = 0;	/* the mark is taken, but no line started here */
	bpf_loop(len, tg_scan_byte, &s, 0);
	return s.found | (__u64)(s.why & 0xff) << 8 |
	       (__u64)s.line_off << 32;
}

/*
 * A write that begins inside a DATA body, read a block at a time: the
 * words in which no line starts with "." are taken at once, in place
 * (tg_body_run), the first one that is not is fed to the parser byte by
 * byte (tg_body_bytes), until the body ends. A message body is most of what an
 * MTA writes; the command scan above would spend a callback on each of
 * its bytes.
 */
#define TG_BODY_LOST	0x1ULL	/* an end of body servers read differently */
#define TG_BODY_END(r)	((__u32)((r) >> 32))	/* bytes of the body here */

struct tg_bscan {
	struct tg_flow *f;
	struct sk_msg_md *msg;
	__u32 end;		/* bytes read, up to the body's end */
	__u32 lost;
	struct tg_blk blk;
};

#define TG_BODY_RUN	64	/* words tg_body_run() takes at most */

/*
 * Up to TG_BODY_RUN words of the body from byte i of the write (i a
 * multiple of 8, less than len), read in place (the write is linear: see
 * tg_plain()), as tg_body_words() takes them: returns the bytes taken, 0
 * for none (p->body updated). Reading in place spares a copy a block;
 * global, so that its loop is checked once.
 *
 * The words go two at a time: a pair with no "." is taken by one test.
 * msg->data_end is the end of the len bytes tg_plain() pulled
 * (bpf_msg_pull_data() sets it so, and it is checked once), so the
 * packet bound is the only one a pair needs; a last word alone is left
 * to the caller, byte by byte.
 * Most of a DATA body passes here: on a 16 KiB body, this loop was most
 * of what tlsguard cost a message.
 */
__noinline __u32 tg_body_run(struct sk_msg_md *msg, struct tg_cmd *p,
			     __u32 i, __u32 len)
{
	struct tg_bwords s;
	__u64 off = i;
	void *d, *end;
	__u32 k, t;

	if (!p || (i & 7) || i >= len || len > TG_SCAN_MAX ||
	    !tg_bwords_start(p, &s))
		return 0;
	/* no-op masks, for the verifier: packet offsets must be bounded */
	barrier_var(off);
	off &= 2 * TG_SCAN_MAX - 1;
	d = (void *)(long)msg->data + off;
	end = (void *)(long)msg->data_end;
	/*
	 * The packet bound is the pulled length's only while data_end ends
	 * those len bytes; a kernel that left more readable would have the
	 * words run past them, into bytes the next run parses again.
	 */
	if (end > (void *)(long)msg->data + (len & (2 * TG_SCAN_MAX - 1)))
		return 0;
	for (k = 0; k < TG_BODY_RUN; k += 2, d += 16) {
		if (d + 16 > end)
			break;
		t = tg_bwords_take2(&s, *(__u64 *)d, *(__u64 *)(d + 8));
		if (t < 2) {
			k += t;
			break;
		}
	}
	if (k > 0)
		tg_bwords_end(p, &s);
	return 8 * k;
}

/* One step: quiet words read in place, or one word fed byte by byte. */
static long tg_body_step(__u32 n, void *ctx)
{
	struct tg_bscan *s = ctx;
	struct tg_flow *f = s->f;
	__u32 i = s->end, r;
	int ev;

	if (!f || i >= s->blk.len || i > TG_SCAN_MAX)
		return 1;
	r = tg_body_run(s->msg, &f->cmd, i, s->blk.len);
	if (r) {
		s->end = i + r;
		return s->end >= s->blk.len;
	}
	/* no word taken: the next one byte by byte, from a window's copy */
	if (tg_blk_get(&s->blk, i, 0)) {
		s->lost = 1;
		return 1;
	}
	r = tg_body_bytes(&f->cmd, &s->blk, i);
	s->end = i + (r & 0xff);
	ev = r >> 8;
	if (ev == TG_CMD_BODY_END) {
		tg_emit_line(f, TG_LINE_END, 0, 0, 0);
		f->cmds++;
		return 1;
	}
	if (ev != TG_CMD_NONE) {
		/* TG_CMD_BODY_AMBIGUOUS: servers differ on it */
		s->lost = 1;
		return 1;
	}
	return s->end >= s->blk.len || (r & 0xff) == 0;
}

/*
 * The body part of a write that begins in a DATA body: returns
 * TG_BODY_LOST, or in TG_BODY_END() how many bytes belong to the body
 * (all len when it does not end here). A global function, like
 * tg_scan_cmds().
 */
__noinline __u64 tg_scan_body(struct sk_msg_md *msg, struct tg_flow *f,
			      __u32 len)
{
	struct tg_bscan s = {};

	if (!f)
		return TG_BODY_LOST;
	if (len > TG_SCAN_MAX)
		len = TG_SCAN_MAX;
	s.f = f;
	s.msg = msg;
	s.blk.base = (__u64)(long)msg->data;
	s.blk.len = len;
	/* each step takes 8 bytes at least, or ends the scan */
	bpf_loop(len / 8 + 1, tg_body_step, &s, 0);
	return (s.lost ? TG_BODY_LOST : 0) | (__u64)s.end << 32;
}

/* Forget what was scanned from the mark on: those bytes are held. */
static __always_inline void tg_rewind(struct tg_flow *f)
{
	f->cmd = f->mark.cmd;
	f->cmds = f->mark.cmds;
	f->data_cmd = f->mark.data_cmd;
	f->starttls_cmd = f->mark.starttls_cmd;
}

/*
 * Out through the slot's near end. When that socket is gone (the agent
 * died: --pin keeps the kernel side), nobody can answer: fail closed, so
 * that the MTA is told now rather than at its reply timeout.
 */
static __always_inline int tg_redirect(struct sk_msg_md *msg,
				       struct tg_flow *f, __u64 *inject)
{
	int verdict = bpf_msg_redirect_hash(msg, &tg_socks, inject, 0);

	if (verdict != SK_PASS)
		tg_fail_flow_as(f, f->why, TG_FAIL_SLOT_GONE);
	return verdict;
}

static __always_inline int tg_divert(struct sk_msg_md *msg, struct tg_flow *f,
				     __u32 why)
{
	struct tg_slot *slot;
	__u32 idx;

	if (f->cmds != f->replies || f->reply.line_len ||
	    !f->reply.new_reply || f->plain_again) {
		/*
		 * The host still owes replies, or has sent part of one, or
		 * bytes the MTA may not have read (plain_again): ours would
		 * come out of order, or be read as the end of the host's.
		 */
		TG_STAT_INC(no_slot);
		tg_fail_flow_as(f, why, TG_FAIL_PENDING);
		return SK_DROP;
	}
	if (bpf_map_pop_elem(&tg_free_slots, &idx)) {
		TG_STAT_INC(no_slot);
		tg_emit(TG_EV_NO_SLOT, f, TG_NO_SLOT);
		tg_fail_flow_as(f, why, TG_FAIL_NO_SLOT);
		return SK_DROP;
	}
	slot = bpf_map_lookup_elem(&tg_slots, &idx);
	if (!slot) {
		tg_fail_flow_as(f, why, TG_FAIL_NO_SLOT);
		return SK_DROP;
	}
	slot->flow = f->cookie;
	f->state = TG_FS_DIVERTED;
	f->slot = idx;
	f->why = why;
	f->held++;
	TG_STAT_INC(diverted);
	tg_emit(TG_EV_DIVERT, f, idx);
	return tg_redirect(msg, f, &slot->inject);
}

static __always_inline int tg_to_slot(struct sk_msg_md *msg, struct tg_flow *f)
{
	__u32 idx = f->slot;
	struct tg_slot *slot = bpf_map_lookup_elem(&tg_slots, &idx);

	if (!slot || slot->flow != f->cookie) {
		tg_fail_flow_as(f, f->why, TG_FAIL_SLOT_GONE);
		return SK_DROP;
	}
	return tg_redirect(msg, f, &slot->inject);
}

/*
 * A write that is one whole command line, begun at a line start, copied
 * out once (TG_CLINE_MAX bytes at most): most of an SMTP session is such
 * writes. tg_cmd_one() reads it.
 */
struct tg_line {
	struct tg_cmd *p;
	__u32 len;
	int ev;
	unsigned char buf[TG_CLINE_MAX];	/* the line, then zeros */
};

/* Byte i of the line, to the parser; the event at its LF ends the walk. */
static long tg_line_byte(__u32 i, void *ctx)
{
	struct tg_line *l = ctx;

	if (!l->p || i >= l->len)
		return 1;
	/* i < len <= TG_CLINE_MAX: the mask is for the verifier */
	l->ev = tg_cmd_step(l->p, l->buf[i & (TG_CLINE_MAX - 1)]);
	return l->ev != TG_CMD_NONE;
}

/*
 * The write at once, when it is one whole command line (tg_lf_last():
 * one LF, its last byte), begun at a line start, outside DATA's wait.
 * A line of a four-letter verb other than MAIL and BDAT, "RCPT TO:<...>",
 * "DATA", "QUIT", "EHLO host", is taken from its words (tg_cmd_line());
 * any other, MAIL above all, is fed to the parser from the copy, byte
 * after byte, and its event judged as tg_scan_byte() judges it
 * (tg_cmd_ended()): the same parse, without the scan's windows, skips
 * and line marks at every byte. Returns TG_SCAN_TAKEN, with
 * TG_SCAN_DIVERT (reason in bits 8-15) or TG_SCAN_LOST when the line
 * must not pass (the flow is then as at the line's start, marked), or 0
 * when the write is to be scanned (f untouched). Global, verified once.
 */
__noinline __u64 tg_cmd_one(struct sk_msg_md *msg, struct tg_flow *f,
			    __u32 len)
{
	struct tg_line l = {};
	__u32 stop;
	__u64 n;

	/* bytes after DATA before its reply are tg_scan_byte()'s to judge */
	if (!f || f->data_cmd || len < 6 || len > TG_CLINE_MAX ||
	    f->cmd.mode != TG_MODE_CMD || f->cmd.line_len)
		return 0;
	/* the mask changes nothing; the verifier needs it (see tg_blk_get) */
	barrier_var(len);
	len = ((len - 1) & (TG_CLINE_MAX - 1)) + 1;
	if (bpf_probe_read_kernel(l.buf, len, msg->data))
		return 0;
	if (tg_cmd_line(&f->cmd, l.buf, len)) {
		/* a line raising TG_CMD_LINE: nothing stops it */
		tg_cmd_ended(f, TG_CMD_LINE, (__u64)(long)msg->data, 0, len);
	} else {
		if (!tg_lf_last(l.buf, len, TG_CLINE_MAX))
			return 0;
		tg_mark_flow(f);
		l.p = &f->cmd;
		l.len = len;
		bpf_loop(len, tg_line_byte, &l, 0);
		if (l.ev == TG_CMD_NONE || l.ev == TG_CMD_CHUNK_END ||
		    l.ev == TG_CMD_BODY_END) {
			/* not a line's end after all: scan it */
			tg_rewind(f);
			return 0;
		}
		stop = tg_cmd_ended(f, l.ev, (__u64)(long)msg->data, 0, len);
		if (stop) {
			tg_rewind(f);
			return TG_SCAN_TAKEN | stop;
		}
	}
	if (tg_audit_on) {
		/* the line without its LF, and the CR before it */
		n = len - 1 - f->cmd.cr;
		barrier_var(n);
		n &= TG_CLINE_MAX - 1;
		tg_emit_line(f, 0, (__u64)(long)msg->data, n, 0);
	}
	f->cmds++;
	return TG_SCAN_TAKEN;
}

/*
 * A write that begins in a DATA body, read TG_SCAN_MAX bytes at a time,
 * up to TG_BODY_WINDOWS of them, in this one run. Before, each window was
 * a run of its own (passed with bpf_msg_apply_bytes(), the rest run
 * again): for an MTA's body writes, a message's largest, that was one
 * more run, lookup and push a window. Returns a verdict, or -1 when no
 * byte of the write belonged to the body: the caller reads it as
 * commands, with its first len bytes pulled (as this pulled them).
 */
#define TG_BODY_WINDOWS	16

/*
 * Bytes [off, off + n) of the write made readable at msg->data; else the
 * flow is failed closed (unreadable, so unjudged) and 1 returned.
 */
static __always_inline int tg_pull_or_fail(struct sk_msg_md *msg,
					   struct tg_flow *f, __u32 off,
					   __u32 n)
{
	if (bpf_msg_pull_data(msg, off, off + n, 0) ||
	    (void *)(long)msg->data + n > (void *)(long)msg->data_end) {
		tg_fail_flow(f, TG_WHY_BAD_MAIL);
		return 1;
	}
	return 0;
}

static __always_inline int tg_plain_body(struct sk_msg_md *msg,
					 struct tg_flow *f)
{
	__u32 size = msg->size, off = 0, w, end, k;
	__u64 r;

	for (k = 0; k < TG_BODY_WINDOWS && off < size; k++) {
		w = size - off;
		if (w > TG_SCAN_MAX)
			w = TG_SCAN_MAX;
		if (tg_pull_or_fail(msg, f, off, w))
			return SK_DROP;
		r = tg_scan_body(msg, f, w);
		if (r & TG_BODY_LOST) {
			tg_fail_flow(f, TG_WHY_DESYNC);
			return SK_DROP;
		}
		end = TG_BODY_END(r);
		off += end;
		/* the body ended, or the scan stopped short: the rest runs again */
		if (end < w || f->cmd.mode != TG_MODE_BODY)
			break;
	}
	if (off == 0)
		return -1;
	/* What follows the body (or the windows read) runs again. */
	if (off < size)
		bpf_msg_apply_bytes(msg, off);
	return SK_PASS;
}

static __always_inline int tg_plain(struct sk_msg_md *msg, struct tg_flow *f)
{
	__u32 len = msg->size, line_off, why;
	int verdict;
	__u64 r;

	if (len > TG_SCAN_MAX)
		len = TG_SCAN_MAX;
	if (len == 0)
		return SK_PASS;
	/*
	 * A command write mostly lies in its first page fragment, which
	 * msg->data spans when the program starts (NULL when the kernel
	 * must copy it first): then there is nothing to pull. The helper
	 * call cost 60 ns of a command write's ~500. data_end may then lie
	 * beyond len: only tg_body_run() needs it not to, and commands
	 * never reach it.
	 */
	if (f->cmd.mode == TG_MODE_BODY) {
		verdict = tg_plain_body(msg, f);
		if (verdict >= 0)
			return verdict;
	} else if ((void *)(long)msg->data + len >
			   (void *)(long)msg->data_end &&
		   tg_pull_or_fail(msg, f, 0, len)) {
		return SK_DROP;
	}
	r = tg_cmd_one(msg, f, len);
	if (r == TG_SCAN_TAKEN)
		return SK_PASS;
	if (!(r & TG_SCAN_TAKEN))
		r = tg_scan_cmds(msg, f, len);
	if (r & TG_SCAN_LOST) {
		tg_fail_flow(f, TG_WHY_DESYNC);
		return SK_DROP;
	}
	/* the line in progress started at line_off: 0 if in an earlier write */
	line_off = (r & TG_SCAN_LINE) ? TG_SCAN_OFF(r) : 0;
	why = TG_SCAN_WHY(r);

	if (!(r & TG_SCAN_DIVERT) && tg_cmd_holding(&f->cmd)) {
		/*
		 * A MAIL line whose address has ended names its sender: one
		 * that is not guaranteed passes, however long its parameters
		 * (the parser goes on from here: the end of the line judges
		 * the same sender again).
		 */
		if (line_off == 0 && tg_cmd_sender_known(&f->cmd) &&
		    !tg_guaranteed(&f->cmd)) {
			if (len < msg->size)
				bpf_msg_apply_bytes(msg, len);
			return SK_PASS;
		}
		if (f->cmd.line_len <= TG_LINE_MAX && line_off == 0) {
			/* Wait for the rest of the line; parse it again then. */
			tg_rewind(f);
			TG_STAT_INC(corked);
			bpf_msg_cork_bytes(msg, len + 1);
			return SK_PASS;
		}
		if (line_off == 0) {
			r |= TG_SCAN_DIVERT;
			why = TG_WHY_BAD_MAIL;
		}
	}
	if ((r & TG_SCAN_DIVERT) || tg_cmd_holding(&f->cmd)) {
		tg_rewind(f);
		if (line_off > 0) {
			/* Pass what precedes the line; run again on the rest. */
			bpf_msg_apply_bytes(msg, line_off);
			return SK_PASS;
		}
		return tg_divert(msg, f, why);
	}
	if (len < msg->size)
		bpf_msg_apply_bytes(msg, len);
	return SK_PASS;
}

/*
 * Once STARTTLS is accepted (and in the TLS states that follow), the
 * client must write TLS records. A client that writes something else has
 * given up on TLS and goes on in plaintext on the same connection: its
 * commands are read again from the first byte that is not TLS. Only the
 * record headers are read, a handful per write, so bulk TLS data costs
 * little: the record bodies are skipped by their length.
 */
#define TG_TLS_RECORDS	32	/* record headers read per run */

/*
 * The record loop runs as a bpf_loop callback, verified once, rather than
 * as a loop the verifier unrolls: unrolled, its TG_TLS_RECORDS rounds
 * made tg_smtp_msg cost 0.7 million verifier steps on 6.18 and more than
 * the limit of a million on 6.1.
 */
struct tg_framing {
	struct sk_msg_md *msg;
	struct tg_flow *f;
	__u32 size;
	__u32 off;		/* the next byte to frame */
	int alert;		/* a record header of type alert was seen */
	int appdata;		/* ... of type application data */
	int ret;		/* 0 while framing; else tg_frame()'s result */
};

static long tg_frame_rec(__u32 i, void *ctx)
{
	struct tg_framing *c = ctx;
	struct sk_msg_md *msg = c->msg;
	struct tg_flow *f = c->f;
	unsigned char hdr[8] = {};
	__u32 off = c->off, size = c->size, left;
	__u64 n;
	int j;

	if (!f || off >= size)
		return 1;
	if (f->tlsc.rec_hdr >= 5) {
		/* inside a record body: skip it by its length */
		left = size - off;
		if (left > f->tlsc.rec_left)
			left = f->tlsc.rec_left;
		f->tlsc.rec_left -= left;
		c->off = off + left;
		if (f->tlsc.rec_left == 0) {
			f->tlsc.rec_hdr = 0;
			f->tlsc.rec_len = 0;
		}
		return 0;
	}
	/* (the rest of) a record header */
	n = 5 - f->tlsc.rec_hdr;
	if (n > size - off)
		n = size - off;
	/*
	 * clang knows n <= 5 here and drops the test below; the verifier of
	 * kernels before 6.8 cannot learn that bound from the comparison of
	 * two registers above, and then rejects the read into hdr[] (seen on
	 * 6.1). The barrier keeps the test with its constant, which every
	 * verifier understands.
	 */
	barrier_var(n);
	if (n == 0 || n > 5)
		goto unreadable;
	if (bpf_msg_pull_data(msg, off, off + (__u32)n, 0))
		goto unreadable;
	if ((void *)(long)msg->data + n > (void *)(long)msg->data_end)
		goto unreadable;
	if (bpf_probe_read_kernel(hdr, n, (void *)(long)msg->data))
		goto unreadable;
	for (j = 0; j < 5; j++) {
		if (j >= n)
			break;
		if (f->tlsc.rec_hdr == 0 && hdr[j] == TG_TLS_CT_ALERT)
			c->alert = 1;
		if (f->tlsc.rec_hdr == 0 && hdr[j] == TG_TLS_CT_APPDATA)
			c->appdata = 1;
		if (tg_tlsc_step(&f->tlsc, hdr[j]) == TG_TLS_BAD) {
			c->off = off + j;
			c->ret = 1;
			return 1;
		}
	}
	c->off = off + (__u32)n;
	return 0;
unreadable:
	c->ret = -1;
	return 1;
}

/*
 * Frame the write as TLS records. The result, packed (see tg_scan_cmds()
 * for why): TG_FRAME_CODE() is 0 when all of it is TLS, 1 with
 * TG_FRAME_OFF() at the first byte that is not, 2 with TG_FRAME_OFF()
 * where the run stopped (more records than TG_TLS_RECORDS), 3 when it
 * cannot be read; TG_FRAME_ALERT (TG_FRAME_APPDATA) is set when a record
 * header of type alert (application data) was seen. A global function, verified once, like tg_scan_cmds().
 */
#define TG_FRAME_CODE(r)	((__u32)(r) & 0xff)
#define TG_FRAME_ALERT		0x100ULL
#define TG_FRAME_APPDATA	0x200ULL
#define TG_FRAME_OFF(r)		((__u32)((r) >> 32))

__noinline __u64 tg_frame(struct sk_msg_md *msg, struct tg_flow *f,
			  __u32 size)
{
	struct tg_framing c = { .msg = msg, .f = f, .size = size };
	__u64 alert;

	if (!f)
		return 3;
	bpf_loop(TG_TLS_RECORDS, tg_frame_rec, &c, 0);
	alert = (c.alert ? TG_FRAME_ALERT : 0) |
		(c.appdata ? TG_FRAME_APPDATA : 0);
	if (c.ret == 1)
		return 1 | alert | (__u64)c.off << 32;
	if (c.ret)
		return 3 | alert;
	if (c.off >= size)
		return alert;
	/* More records than one run reads: the rest is run again. */
	return 2 | alert | (__u64)c.off << 32;
}

/*
 * This write of application data on a judged flow was licensed by a
 * uprobe at the writing thread's call of the TLS library (see
 * tg_tls_grant()); the licence is used up by it.
 */
static __always_inline int tg_write_licensed(struct tg_flow *f)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tg_write_lic *l = bpf_map_lookup_elem(&tg_ssl_writes, &id);

	if (!l || l->cookie != f->cookie || l->left == 0 ||
	    l->until_ns < bpf_ktime_get_ns())
		return 0;
	if (--l->left == 0)
		bpf_map_delete_elem(&tg_ssl_writes, &id);
	return 1;
}

static __always_inline int tg_handshake(struct sk_msg_md *msg,
					struct tg_flow *f)
{
	__u32 size = msg->size, off, r;
	__u64 fr;

	if (size == 0)
		return SK_PASS;
	fr = tg_frame(msg, f, size);
	r = TG_FRAME_CODE(fr);
	off = TG_FRAME_OFF(fr);
	/*
	 * A client's alert in the clear: the handshake failed (or the session
	 * ends); whatever the ServerHello said, this is not TLS to rely on.
	 */
	if ((fr & TG_FRAME_ALERT) && f->state != TG_FS_TLS_FAILED)
		f->state = TG_FS_TLS_FAILED;
	/*
	 * Application data where tlsguard does not know the version: before
	 * the ServerHello was read, or after one it could not read (the
	 * client's library may have accepted what the parser refused, e.g.
	 * records the library skips, at TLS 1.0), or below TLS 1.2. Only the
	 * uprobes can judge such a session, by the sender, and only what
	 * they saw written: a write they did not license (a session they
	 * could not tie, a function they do not probe, a time they were not
	 * attached) is not judged at all: fail closed.
	 */
	if ((fr & TG_FRAME_APPDATA) &&
	    (f->state == TG_FS_HANDSHAKE ||
	     ((f->state == TG_FS_TLS_FAILED || f->state == TG_FS_WEAK) &&
	      !tg_write_licensed(f)))) {
		tg_fail_flow(f, TG_WHY_UNSEEN_TLS);
		return SK_DROP;
	}
	if (r == 3) {
		/* Unreadable, so unjudged: fail closed. */
		tg_fail_flow(f, TG_WHY_BAD_MAIL);
		return SK_DROP;
	}
	if (r == 2) {
		if (off > 0 && off < size)
			bpf_msg_apply_bytes(msg, off);
		return SK_PASS;
	}
	if (r == 1) {
		/*
		 * Plaintext from here on: a fresh line, judged as such. What
		 * the host sent since STARTTLS was not counted as replies, and
		 * the client's TLS library may have left some of it unread:
		 * the agent's replies could not be known to come first, so
		 * this flow is never diverted (tg_divert() fails it).
		 */
		f->plain_again = 1;
		f->state = TG_FS_PLAIN;
		tg_cmd_init(&f->cmd);
		tg_reply_init(&f->reply);
		if (off > 0) {
			bpf_msg_apply_bytes(msg, off);
			return SK_PASS;
		}
		return tg_plain(msg, f);
	}
	return SK_PASS;
}

static __always_inline int tg_inject(struct sk_msg_md *msg, __u32 idx)
{
	struct tg_slot *slot = bpf_map_lookup_elem(&tg_slots, &idx);

	if (!slot || !slot->flow)
		return SK_DROP;
	return bpf_msg_redirect_hash(msg, &tg_socks, &slot->flow,
				     BPF_F_INGRESS);
}

/*
 * The socket's cookie, which tg_sockops (or the agent, for an injection
 * socket) made before it put the socket in tg_socks; 0 if it cannot be
 * read, which no flow has. sk_msg has no bpf_get_socket_cookie() on the
 * kernels we claim; the socket has the cookie itself.
 */
static __always_inline __u64 tg_msg_cookie(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	struct tcp_sock *tp;

	if (!sk)
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	return tp->inet_conn.icsk_inet.sk.__sk_common.skc_cookie.counter;
}

static __always_inline int tg_smtp_verdict(struct sk_msg_md *msg)
{
	struct tg_flow *f;
	__u64 cookie;
	__u32 *slot;

	/*
	 * apply_bytes and cork_bytes live in the message, and a message is
	 * run again (after apply_bytes) or carried on (corked): a value set
	 * by an earlier run must not bind this verdict.
	 */
	bpf_msg_apply_bytes(msg, 0);
	bpf_msg_cork_bytes(msg, 0);
	cookie = tg_msg_cookie(msg);
	f = bpf_map_lookup_elem(&tg_flows, &cookie);
	if (!f) {
		slot = bpf_map_lookup_elem(&tg_injects, &cookie);
		if (slot)
			return tg_inject(msg, *slot);
		/* untracked (the flow table was full), or lost: fail closed */
		TG_STAT_INC(lost_flow);
		return SK_DROP;
	}
	switch (f->state) {
	case TG_FS_TLS:
		return tg_handshake(msg, f);
	case TG_FS_WEAK:
		/*
		 * Judged inside TLS by the uprobes on the TLS library, which
		 * fail the flow before a held MAIL's record is written. A
		 * session no uprobe can see cannot be judged: fail closed.
		 */
		if (!f->ssl_seen) {
			tg_fail_flow(f, TG_WHY_UNSEEN_TLS);
			return SK_DROP;
		}
		return tg_handshake(msg, f);
	case TG_FS_HANDSHAKE:
	case TG_FS_TLS_FAILED:
		return tg_handshake(msg, f);
	case TG_FS_DIVERTED:
		return tg_to_slot(msg, f);
	case TG_FS_FAILED:
		return SK_DROP;
	}
	return tg_plain(msg, f);
}

/* Every dropped write is counted (tlsguard_kernel_drops_total). */
SEC("sk_msg")
int tg_smtp_msg(struct sk_msg_md *msg)
{
	int verdict = tg_smtp_verdict(msg);

	if (verdict == SK_DROP)
		TG_STAT_INC(msg_dropped);
	return verdict;
}
