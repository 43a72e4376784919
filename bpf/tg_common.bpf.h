/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_common.bpf.h - maps and helpers shared by tlsguard's BPF programs
 * DESCRIPTION
 *	The programs live in one file per attachment point and are linked
 *	into one object (bpftool gen object). The maps are defined once, in
 *	tg_maps.bpf.c; every other file sees them through the extern
 *	declarations that TG_MAP() makes here, from the same text, so the
 *	definitions cannot drift apart.
 */
#ifndef TG_COMMON_BPF_H
#define TG_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "tlsguard.h"
#include "tg_rule.h"
#include "tg_stab.h"

#ifdef TG_DEFINE_MAPS
#define TG_MAP(decl, name) decl name SEC(".maps")
#else
#define TG_MAP(decl, name) extern decl name SEC(".maps")
#endif

/* The MTA's tracked flows and the agent's injection sockets. */
TG_MAP(struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, TG_FLOWS_MAX + TG_SLOTS_MAX);
	__type(key, __u64);
	__type(value, __u64);
}, tg_socks);

/*
 * The agent's injection sockets in tg_socks: cookie -> slot. A socket of
 * tg_socks that is in neither this nor tg_flows is a flow the flow table
 * had no room for.
 */
TG_MAP(struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TG_SLOTS_MAX);
	__type(key, __u64);
	__type(value, __u32);
}, tg_injects);

/* Per-flow protocol state, keyed by cookie; the agent reads and resets it. */
TG_MAP(struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TG_FLOWS_MAX);
	__type(key, __u64);
	__type(value, struct tg_flow);
}, tg_flows);

/*
 * Guaranteed and exempt senders (see TG_POL_* in tlsguard.h), as the
 * buckets of include/tg_stab.h; the agent sizes it before load and sets
 * tg_senders_bits to match.
 */
TG_MAP(struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, (1U << TG_STAB_DEFAULT_BITS) + TG_STAB_REACH - 1);
	__type(key, __u32);
	__type(value, struct tg_sbucket);
}, tg_senders);

/* Injection slots, and the queue of free ones (filled by the agent). */
TG_MAP(struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TG_SLOTS_MAX);
	__type(key, __u32);
	__type(value, struct tg_slot);
}, tg_slots);

TG_MAP(struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, TG_SLOTS_MAX);
	__type(value, __u32);
}, tg_free_slots);

TG_MAP(struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tg_stats);
}, tg_stats);

/* The guarded cgroup's connections that count against tg_flows. */
TG_MAP(struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tg_conns);
}, tg_conns);

TG_MAP(struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
}, tg_events);

/* The guarded cgroup, for the uprobes, which see every process. */
TG_MAP(struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
}, tg_cgroup);

/* TLS sessions of the guarded processes tied to their flows' cookies. */
TG_MAP(struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TG_FLOWS_MAX);
	__type(key, struct tg_ssl_key);
	__type(value, __u64);
}, tg_ssl);

/*
 * The descriptor each TLS session object was last given, by any process:
 * a process that inherits a session across fork (Exim's TLS proxy for a
 * continued connection) never gives it a socket itself.
 */
TG_MAP(struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TG_FLOWS_MAX);
	__type(key, __u64);
	__type(value, __s32);
}, tg_ssl_fd);

/* What each thread may write on a judged TLS flow (tg_tls_out()). */
TG_MAP(struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct tg_write_lic);
}, tg_ssl_writes);

/* SSL_read calls between entry and return. */
TG_MAP(struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct tg_ssl_read);
}, tg_ssl_reads);

/* The parsers, one byte at a time (tg_parse.bpf.c says why global). */
extern int tg_cmd_step(struct tg_cmd *p, __u32 c);
extern int tg_reply_step(struct tg_reply *r, __u32 c);
extern int tg_tls_step(struct tg_tls *t, __u32 c);
extern int tg_tlsc_step(struct tg_tls_client *r, __u32 c);

/* The policy of a key in tg_senders, 0 for none (tg_policy.bpf.c). */
extern int tg_senders_get(__u64 key);

/*
 * Set by the agent before load: SMTP lines are reported (--audit); the
 * homes of tg_senders are 2^tg_senders_bits buckets (tg_stab.h).
 */
#ifdef TG_DEFINE_MAPS
const volatile __u32 tg_flows_room = TG_FLOWS_MAX;
const volatile __u32 tg_audit_on = 0;
const volatile __u32 tg_senders_bits = TG_STAB_DEFAULT_BITS;
#else
extern const volatile __u32 tg_flows_room;
extern const volatile __u32 tg_audit_on;
extern const volatile __u32 tg_senders_bits;
#endif

/*
 * Set by the agent before load: the sub-address delimiters (tg_smtp.h
 * declares it, and says how the parser reads it); "+" unless told.
 */
#ifdef TG_DEFINE_MAPS
const volatile __u64 tg_delims[2] = { TG_DELIMS_PLUS, 0 };
#endif

/*
 * Set by the agent before load: the guarded ports; the first tg_ntls of
 * them speak TLS from the start (SMTPS, RFC 8314).
 */
#ifdef TG_DEFINE_MAPS
const volatile __u16 tg_ports[TG_PORTS_MAX] = { 25 };
const volatile __u32 tg_nports = 1;
const volatile __u32 tg_ntls = 0;
#else
extern const volatile __u16 tg_ports[TG_PORTS_MAX];
extern const volatile __u32 tg_nports;
extern const volatile __u32 tg_ntls;
#endif

/* 0: not guarded, 1: SMTP, 2: implicit TLS (port in host order) */
static __always_inline int tg_port_kind(__u16 port)
{
	for (int i = 0; i < TG_PORTS_MAX; i++) {
		if (i >= tg_nports)
			break;
		if (tg_ports[i] == port)
			return i < tg_ntls ? 2 : 1;
	}
	return 0;
}

#define TG_STAT_INC(field)						\
	do {								\
		__u32 zero__ = 0;					\
		struct tg_stats *s__ =					\
			bpf_map_lookup_elem(&tg_stats, &zero__);	\
		if (s__)						\
			s__->field++;					\
	} while (0)

/* Bytes a program reads per invocation; the rest is handed back. */
#define TG_SCAN_MAX	4096
#define TG_BLOCK	64

/*
 * Waking the agent: an audit line (a dozen a message) does not, until a
 * quarter of the ring buffer waits to be read, and neither does an event
 * that only the audit trail reads (a flow that ends unheld, a handshake
 * judged TLS 1.2 or higher): the agent reads them at its audit timer
 * (every 100 ms while the audit trail is on). Every event the agent
 * must act on wakes it (a flow diverted, failed, a held flow's close, a
 * weak or failed handshake), and it then reads the lines before it too.
 * Woken for each line, the agent spent more on waking than on the lines,
 * and fell behind a plaintext load with the audit trail on; woken for
 * each close, tg_sockops cost 18 us a message instead of 5 (the wake-up
 * is an irq_work, a self-interrupt: a VM exit here).
 */
static __always_inline __u64 tg_line_wakeup(void)
{
	return bpf_ringbuf_query(&tg_events, BPF_RB_AVAIL_DATA) >=
			       bpf_ringbuf_query(&tg_events, BPF_RB_RING_SIZE) / 4 ?
		       BPF_RB_FORCE_WAKEUP :
		       BPF_RB_NO_WAKEUP;
}

static __always_inline void tg_emit_as(__u32 type, const struct tg_flow *f,
				       __u32 slot, __u64 wake)
{
	struct tg_event *e;

	e = bpf_ringbuf_reserve(&tg_events, sizeof(*e), 0);
	if (!e) {
		TG_STAT_INC(events_lost);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->type = type;
	e->slot = slot;
	e->cookie = f->cookie;
	e->why = f->why;
	e->family = f->family;
	e->lport = f->lport;
	e->rport = f->rport;
	e->tls_version = f->tls_version;
	e->tls_cipher = f->tls_cipher;
	e->state = f->state;
	__builtin_memcpy(e->laddr, f->laddr, 16);
	__builtin_memcpy(e->raddr, f->raddr, 16);
	bpf_ringbuf_submit(e, wake);
}

/* An event the agent acts on: forced, as lines before it woke nobody. */
static __always_inline void tg_emit(__u32 type, const struct tg_flow *f,
				    __u32 slot)
{
	tg_emit_as(type, f, slot, BPF_RB_FORCE_WAKEUP);
}

/* An event only the audit trail reads: it waits, as lines do. */
static __always_inline void tg_emit_audit(__u32 type, const struct tg_flow *f)
{
	tg_emit_as(type, f, TG_NO_SLOT, tg_line_wakeup());
}

/*
 * Report a line of a flow for the audit trail: n bytes at addr, kernel or
 * user memory. Lines longer than TG_LINE_TEXT are cut; CR and LF are not
 * part of the text.
 */
static __always_inline void tg_emit_line(const struct tg_flow *f, __u32 flags,
					 __u64 addr, __u64 n, int user)
{
	struct tg_line_event *e;

	if (!tg_audit_on)
		return;
	e = bpf_ringbuf_reserve(&tg_events, sizeof(*e), 0);
	if (!e) {
		TG_STAT_INC(events_lost);
		return;
	}
	e->type = TG_EV_LINE;
	e->flags = flags;
	e->cookie = f->cookie;
	e->family = f->family;
	e->lport = f->lport;
	e->rport = f->rport;
	e->pad = 0;
	__builtin_memcpy(e->laddr, f->laddr, 16);
	__builtin_memcpy(e->raddr, f->raddr, 16);
	if (n > TG_LINE_TEXT)
		n = TG_LINE_TEXT;
	e->len = 0;
	if (n && addr) {
		long err = user ? bpf_probe_read_user(e->text, n & 0xff,
						      (void *)addr) :
				  bpf_probe_read_kernel(e->text, n & 0xff,
							(void *)addr);
		if (!err)
			e->len = (__u32)n;
	}
	bpf_ringbuf_submit(e, tg_line_wakeup());
}

/*
 * The scanners' window on the bytes they read: a block of up to TG_BLOCK
 * bytes copied from base (kernel or user memory) into the scanner's own
 * stack, starting at a multiple of 8 so that whole words can be read
 * from it aligned. tg_blk_get() makes byte i (i < len) readable at
 * tg_blk_at(b, i); it returns non-zero when the bytes cannot be read.
 */
struct tg_blk {
	__u64 base;		/* address of byte 0 */
	__u32 len;		/* bytes in all */
	__u32 off;		/* byte that buf[0] holds, a multiple of 8 */
	__u32 n;		/* bytes of buf that are valid */
	__u32 pad;
	__u8 buf[2 * TG_BLOCK];	/* TG_BLOCK used; the rest eases the bound */
};

/* Where tg_blk_get_from() copies a window from. */
#define TG_BLK_KERNEL	0	/* kernel memory at base */
#define TG_BLK_USER	1	/* user memory at base */
#define TG_BLK_SKB	2	/* the segment of skb, wherever its bytes lie */

/*
 * from is a constant at every call: the branches on it are gone after
 * inlining, and with them the helpers a program type may not call.
 */
static __always_inline long tg_blk_get_from(struct tg_blk *b, __u32 i,
					    int from, struct __sk_buff *skb)
{
	__u64 n;
	long err;

	if (i - b->off < b->n)
		return 0;
	b->off = i & ~7U;
	n = b->len - b->off;
	if (n > TG_BLOCK)
		n = TG_BLOCK;
	/* clang drops the masks below as redundant; the verifier needs them */
	barrier_var(n);
	b->n = 0;
	if (from == TG_BLK_SKB) {
		/* 1..TG_BLOCK, as it is: the helper takes no empty copy */
		n = ((n - 1) & (TG_BLOCK - 1)) + 1;
		err = bpf_skb_load_bytes(skb, b->off, b->buf, n);
	} else {
		n &= 2 * TG_BLOCK - 1;
		err = from == TG_BLK_USER ?
			      bpf_probe_read_user(b->buf, n,
						  (void *)(b->base + b->off)) :
			      bpf_probe_read_kernel(b->buf, n,
						    (void *)(b->base + b->off));
	}
	if (!err)
		b->n = (__u32)n;
	return err;
}

static __always_inline long tg_blk_get(struct tg_blk *b, __u32 i, int user)
{
	return tg_blk_get_from(b, i, user ? TG_BLK_USER : TG_BLK_KERNEL,
			       NULL);
}

static __always_inline unsigned char tg_blk_at(const struct tg_blk *b, __u32 i)
{
	return b->buf[(i - b->off) & (TG_BLOCK - 1)];
}

/* Defined in tg_parse.bpf.c. */
extern __u32 tg_body_block(struct tg_cmd *p, const struct tg_blk *b,
			   __u32 i);
extern __u32 tg_body_bytes(struct tg_cmd *p, const struct tg_blk *b, __u32 i);

/*
 * Bytes at i that the command parser p may pass over without reading
 * them one by one, because feeding them would change nothing but a
 * counter or a state read off them at once: all of a BDAT chunk but its
 * last byte (the parser counts it down here), and whole 8-byte words of
 * a DATA body in which no line starts with "." (tg_body_block(), which
 * sets where the body's last line is). A message body is most of what
 * an MTA writes; this keeps its cost to a few instructions a word. A
 * body's words must be in the window already (tg_blk_get at i); a
 * chunk's need not be.
 */
static __always_inline __u32 tg_cmd_skip(struct tg_cmd *p,
					 const struct tg_blk *b, __u32 i)
{
	__u64 left;

	if (p->mode == TG_MODE_CHUNK) {
		left = b->len - i;
		if (p->chunk_left <= 1)
			return 0;
		if (left > p->chunk_left - 1)
			left = p->chunk_left - 1;
		p->chunk_left -= left;
		return (__u32)left;
	}
	if (p->mode != TG_MODE_BODY || (i & 7))
		return 0;
	return tg_body_block(p, b, i);
}

/*
 * Keep the sender of a complete MAIL line for tlsguardctl and the logs:
 * p's address, in the line that starts at line_off of the len bytes at
 * base (kernel or user memory).
 */
static __always_inline void tg_keep_sender(struct tg_flow *f,
					   const struct tg_cmd *p, __u64 base,
					   __u32 line_off, __u32 len, int user)
{
	__u64 off = (__u64)line_off + p->addr_start;
	__u64 n = p->addr_len;

	if (n > TG_SENDER_MAX - 1)
		n = TG_SENDER_MAX - 1;
	if (off + n > len)
		n = 0;
	n &= TG_SENDER_MAX - 1;
	__builtin_memset(f->sender, 0, sizeof(f->sender));
	if (!n)
		return;
	if (user)
		bpf_probe_read_user(f->sender, n, (void *)(base + off));
	else
		bpf_probe_read_kernel(f->sender, n, (void *)(base + off));
}

/*
 * tg_senders' value for key, for tg_rule(), which wants a pointer to it:
 * one of tg_pol_values, read-only data. The search itself is the global
 * function tg_senders_get(), checked once by the verifier.
 */
static const __u8 tg_pol_values[4] = { 0, 1, 2, 3 };

static __always_inline const __u8 *tg_senders_look(void *ctx, const __u64 *key)
{
	int v = tg_senders_get(*key);

	return v ? &tg_pol_values[v & 3] : NULL;
}

/* Is the sender the parser just read a guaranteed one? (tg_rule.h) */
static __always_inline int tg_guaranteed(const struct tg_cmd *p)
{
	return tg_rule_holds(tg_rule(tg_senders_look, NULL, &p->addr_key,
				     &p->domain_key,
				     tg_cmd_srs(p) | tg_cmd_idn(p)));
}

/*
 * Fail a flow closed: tg_smtp_msg drops every later write and
 * tg_reply_skb every later segment; the agent is asked to destroy it, so
 * that the MTA learns at once rather than at its next write.
 */
static __always_inline void tg_fail_flow_as(struct tg_flow *f, __u32 why,
					   __u32 fail)
{
	__u32 zero = 0;
	struct tg_stats *st = bpf_map_lookup_elem(&tg_stats, &zero);

	if (st && fail < TG_FAIL_MAX)
		st->failed[fail]++;
	f->state = TG_FS_FAILED;
	f->why = why;
	tg_emit(TG_EV_KILL, f, TG_NO_SLOT);
}

static __always_inline void tg_fail_flow(struct tg_flow *f, __u32 why)
{
	tg_fail_flow_as(f, why,
			why == TG_WHY_WEAK_TLS	 ? TG_FAIL_WEAK_TLS :
			why == TG_WHY_UNSEEN_TLS ? TG_FAIL_UNSEEN_TLS :
						   TG_FAIL_UNREADABLE);
}

/* A flow enters the TLS handshake: its inner conversation starts. */
static __always_inline void tg_start_tls(struct tg_flow *f)
{
	f->state = TG_FS_HANDSHAKE;
	tg_tls_init(&f->tls);
	__builtin_memset(&f->tlsc, 0, sizeof(f->tlsc));
	tg_cmd_init(&f->inner.cmd);
	tg_reply_init(&f->inner.reply);
	/* With implicit TLS the greeting comes inside. */
	f->inner.cmds = f->implicit_tls ? 1 : 0;
	f->inner.replies = 0;
	f->inner.data_cmd = 0;
}

#endif /* TG_COMMON_BPF_H */
