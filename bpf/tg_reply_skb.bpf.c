// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_reply_skb - read the replies the host sends on a tracked flow
 * DESCRIPTION
 *	sk_skb stream verdict on tg_socks: runs on every segment a tracked
 *	socket receives, before the MTA can read it.
 *
 *	On a plaintext flow the replies go through tg_reply_feed() and are
 *	counted (a segment that is one whole one-line reply, as most are,
 *	at once: tg_reply_line()), so that the reply to the flow's pending EHLO, DATA or
 *	STARTTLS command is recognized: the EHLO reply says whether STARTTLS
 *	is offered, a 3xx reply to DATA starts the DATA body in the command
 *	parser (only then may body lines look like commands without being
 *	ones: 354, or any other 3xx, after which Postfix's and Exim's clients
 *	send the message all the same), a 2xx to STARTTLS starts the
 *	handshake: the clients act on a reply's class, and so does this.
 *	A reply the clients read differently (TG_REPLY_AMBIGUOUS), or a 2xx
 *	to DATA (OpenSMTPD sends the body then, Postfix and Exim do not),
 *	leaves tlsguard unable to count what follows: the flow fails closed.
 *	So does a reply that begins when no command awaits one (a host that
 *	sends replies ahead, partial lines included): the MTA would read it
 *	as the answer to its next command, and were that a held MAIL, take
 *	the host's words for the agent's. The segment that carries such
 *	bytes is dropped whole: none of it reaches the MTA.
 *
 *	In the handshake, the server's first flight goes through
 *	tg_tls_feed(): a well-formed ServerHello gives the negotiated version
 *	(TLS 1.2 or higher: TG_FS_TLS, below: TG_FS_WEAK); an alert or a
 *	malformed flight fails the handshake (TG_FS_TLS_FAILED). Bytes after
 *	a 220 in the same segment belong to the flight and are read as such.
 *
 *	On a diverted flow the agent speaks for the host: whatever the host
 *	sends is dropped, so that it cannot mix with the agent's replies.
 *	A failed flow hears nothing more either.
 */
#include "tg_common.bpf.h"

#define TG_SKB_MAX	(256 * 1024)	/* larger than any GRO segment */

/* tg_scan_replies()'s findings, packed (see tg_scan_cmds()). */
#define TG_RSCAN_BODY	0x1	/* DATA accepted: start the body */
#define TG_RSCAN_TLS	0x2	/* the handshake ended: see f->state */
#define TG_RSCAN_LOST	0x4	/* lost count of the conversation: fail */
#define TG_RSCAN_TAKEN	0x8	/* tg_reply_one() read the segment */

/* As in tg_smtp_msg, the parsers run on the map value itself. */
struct tg_rscan {
	struct tg_flow *f;
	struct __sk_buff *skb;
	__u32 found;		/* TG_RSCAN_* */
	__u32 line_off;		/* where the reply line in progress began */
	__u32 line_seen;	/* a line started in these bytes */
	__u32 pad;
	struct tg_blk blk;
};

/* One byte of the server's first TLS flight. */
static __always_inline long tg_tls_byte(struct tg_rscan *s, struct tg_flow *f,
					unsigned char c)
{
	switch (tg_tls_step(&f->tls, c)) {
	case TG_TLS_VERSION:
		f->tls_version = f->tls.version;
		f->tls_cipher = f->tls.cipher;
		f->state = f->tls.version >= TG_TLS_1_2 ? TG_FS_TLS : TG_FS_WEAK;
		s->found |= TG_RSCAN_TLS;
		return 1;
	case TG_TLS_ALERT:
		f->tls_alert = f->tls.alert;
		/* fall through */
	case TG_TLS_BAD:
		f->state = TG_FS_TLS_FAILED;
		s->found |= TG_RSCAN_TLS;
		return 1;
	}
	return 0;
}

/* The last line of a reply ended at byte i: report it. */
static __always_inline void tg_emit_reply(struct tg_rscan *s,
					  struct tg_flow *f, __u32 i)
{
	__u32 start = s->line_seen ? s->line_off : 0;
	__u64 n = i > start ? i - start : 0;
	unsigned char last = 0;

	if (!tg_audit_on)
		return;
	if (n)
		bpf_probe_read_kernel(&last, 1, (void *)(s->blk.base + i - 1));
	if (n && last == '\r')
		n--;
	tg_emit_line(f, TG_LINE_REPLY | (s->line_seen ? 0 : TG_LINE_CUT),
		     s->blk.base + start, n, 0);
}

/*
 * A reply has ended (f->reply holds it): count it and act on what it
 * answers. Returns TG_RSCAN_* bits.
 */
static __always_inline __u32 tg_reply_done(struct tg_flow *f)
{
	__u32 found = 0;

	f->replies++;
	/* The clients act on the class of a reply, not on one code. */
	if (f->ehlo_cmd && f->replies == f->ehlo_cmd + 1) {
		f->starttls_offered =
			tg_reply_class(&f->reply) == 2 && f->reply.starttls;
		f->chunking_offered =
			tg_reply_class(&f->reply) == 2 && f->reply.chunking;
		f->ehlo_cmd = 0;
	}
	if (f->data_cmd && f->replies == f->data_cmd + 1) {
		f->data_cmd = 0;
		switch (tg_reply_data(&f->reply)) {
		case TG_DATA_BODY:
			found |= TG_RSCAN_BODY;
			break;
		case TG_DATA_UNSURE:
			/* Some clients send the body now, others do not. */
			return TG_RSCAN_LOST;
		}
	}
	if (f->starttls_cmd && f->replies == f->starttls_cmd + 1) {
		f->starttls_cmd = 0;
		if (tg_reply_class(&f->reply) == 2)
			/* What follows is the server's TLS flight. */
			tg_start_tls(f);
	}
	return found;
}

/* Byte i of the segment (bpf_loop's index: see tg_scan_byte()). */
static long tg_rscan_byte(__u32 i, void *ctx)
{
	struct tg_rscan *s = ctx;
	struct tg_flow *f = s->f;
	unsigned char c;
	int ev;

	if (!f || i >= s->blk.len)
		return 1;
	/* unreadable: the scan stops here (see tg_scan_replies()) */
	if (tg_blk_get_from(&s->blk, i, TG_BLK_SKB, s->skb))
		return 1;
	c = tg_blk_at(&s->blk, i);
	if (f->state == TG_FS_HANDSHAKE)
		return tg_tls_byte(s, f, c);
	if (f->reply.line_len == 0) {
		s->line_off = i;
		s->line_seen = 1;
		if (f->reply.new_reply && f->replies >= f->cmds) {
			/*
			 * A reply that no command asked for: a server cannot
			 * answer before it is asked. Passed, it would wait in
			 * the MTA's receive queue and be read as the answer to
			 * the next command, a held MAIL's included.
			 */
			s->found |= TG_RSCAN_LOST;
			return 1;
		}
	}
	ev = tg_reply_step(&f->reply, c);
	if (ev == TG_REPLY_AMBIGUOUS) {
		/* The MTA's client may end the reply elsewhere: lost count. */
		s->found |= TG_RSCAN_LOST;
		return 1;
	}
	if (ev != TG_REPLY_FINAL)
		return 0;
	tg_emit_reply(s, f, i);
	s->found |= tg_reply_done(f);
	return (s->found & TG_RSCAN_LOST) ? 1 : 0;
}

/*
 * Run the reply parser (or, in the handshake, the ServerHello parser) of
 * flow f over the first len bytes of the segment, read a window at a time
 * out of the skb (tg_blk_get_from()). Returns TG_RSCAN_* bits. A global
 * function, verified once on its own, like tg_scan_cmds() in tg_smtp_msg.
 * The audit trail copies reply lines from skb->data: with it on, the
 * caller has pulled the segment linear.
 */
__noinline __u32 tg_scan_replies(struct __sk_buff *skb, struct tg_flow *f,
				 __u32 len)
{
	struct tg_rscan s = {};

	if (!f)
		return 0;
	if (len > TG_SKB_MAX)
		len = TG_SKB_MAX;
	s.f = f;
	s.skb = skb;
	s.blk.base = (__u64)(long)skb->data;
	s.blk.len = len;
	bpf_loop(len, tg_rscan_byte, &s, 0);
	/*
	 * A byte it could not read stopped the scan with no window held
	 * (tg_blk_get_from() empties it first); every other stop comes after a
	 * byte was read. A reply it could not read is one it cannot count.
	 * Said here, not in the callback: a finding set there is one more
	 * state for the verifier to follow through every later byte.
	 */
	if (!s.blk.n)
		s.found |= TG_RSCAN_LOST;
	return s.found;
}

/*
 * The segment at once, when it is a whole reply of one line that a
 * command awaits (tg_reply_line()): most replies come so, and this spares
 * them the pass byte by byte. Not the reply to EHLO, whose keywords
 * matter. Returns TG_RSCAN_* bits with TG_RSCAN_TAKEN, or 0 when the
 * segment is to be read byte by byte. Global, verified once.
 */
__noinline __u32 tg_reply_one(struct __sk_buff *skb, struct tg_flow *f,
			      __u32 len)
{
	unsigned char buf[TG_RLINE_MAX] = {};
	__u64 n;

	if (!f || f->state != TG_FS_PLAIN || f->ehlo_cmd ||
	    f->replies >= f->cmds || len < 5 || len > TG_RLINE_MAX)
		return 0;
	/* the mask changes nothing; the verifier needs it (see tg_blk_get) */
	barrier_var(len);
	len = ((len - 1) & (TG_RLINE_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, 0, buf, len) ||
	    !tg_reply_line(&f->reply, buf, len))
		return 0;
	if (tg_audit_on) {
		/* the line without its LF, and the CR before it */
		n = len - 1;
		if (buf[(n - 1) & (TG_RLINE_MAX - 1)] == '\r')
			n--;
		/* a no-op again, which old verifiers need */
		barrier_var(n);
		n &= TG_RLINE_MAX - 1;
		tg_emit_line(f, TG_LINE_REPLY, (__u64)(long)buf, n, 0);
	}
	return tg_reply_done(f) | TG_RSCAN_TAKEN;
}

static __always_inline int tg_reply_verdict(struct __sk_buff *skb)
{
	struct tg_flow *f;
	__u32 found;
	__u64 cookie;
	__u32 len;

	/* injection sockets have no flow: what they receive passes */
	cookie = bpf_get_socket_cookie(skb);
	f = bpf_map_lookup_elem(&tg_flows, &cookie);
	if (!f)
		return SK_PASS;
	if (f->state == TG_FS_DIVERTED || f->state == TG_FS_FAILED)
		return SK_DROP;
	if (f->state != TG_FS_PLAIN && f->state != TG_FS_HANDSHAKE)
		return SK_PASS;

	/*
	 * Every byte is read: a reply the counters skipped would shift which
	 * reply answers DATA or STARTTLS. A segment that cannot be read whole
	 * fails the flow closed. Segments are read where they lie, copied
	 * out of the skb's pages: a one-line reply at once (tg_reply_one()),
	 * any other a window at a time. Only the audit trail, which copies
	 * lines from skb->data, has a segment pulled linear first:
	 * bpf_skb_pull_data() also makes the skb writable, a new head and a
	 * copy, and on the reply to EHLO it cost 430 ns of the 1,050 that
	 * reading the reply took (BPF run-time statistics, 6.18).
	 */
	len = skb->len;
	if (len == 0)
		return SK_PASS;
	found = tg_reply_one(skb, f, len);
	if (!(found & TG_RSCAN_TAKEN)) {
		if (len > TG_SKB_MAX ||
		    (tg_audit_on &&
		     (bpf_skb_pull_data(skb, len) ||
		      (void *)(long)skb->data + len >
			      (void *)(long)skb->data_end))) {
			tg_fail_flow(f, TG_WHY_BAD_MAIL);
			return SK_DROP;
		}
		found = tg_scan_replies(skb, f, len);
	}
	if (found & TG_RSCAN_LOST) {
		tg_fail_flow(f, TG_WHY_DESYNC);
		return SK_DROP;
	}
	/* Diverted while this segment was read: the agent speaks now. */
	if (f->state == TG_FS_DIVERTED)
		return SK_DROP;

	if (found & TG_RSCAN_BODY)
		tg_cmd_start_body(&f->cmd);
	if (found & TG_RSCAN_TLS) {
		if (f->state == TG_FS_TLS)
			TG_STAT_INC(tls);
		else if (f->state == TG_FS_WEAK)
			TG_STAT_INC(tls_weak);
		else
			TG_STAT_INC(tls_failed);
		/* The agent acts on weak and failed handshakes, or audits. */
		if (f->state != TG_FS_TLS)
			tg_emit(TG_EV_TLS, f, TG_NO_SLOT);
		else if (tg_audit_on)
			tg_emit_audit(TG_EV_TLS, f);
	}
	return SK_PASS;
}

/* Every dropped segment is counted (tlsguard_kernel_drops_total). */
SEC("sk_skb/stream_verdict")
int tg_reply_skb(struct __sk_buff *skb)
{
	int verdict = tg_reply_verdict(skb);

	if (verdict == SK_DROP)
		TG_STAT_INC(skb_dropped);
	return verdict;
}
