// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_parse - the parsers of include/, one byte at a time, as global
 *	BPF functions
 * DESCRIPTION
 *	tg_cmd_step(), tg_reply_step(), tg_tls_step() and tg_tlsc_step()
 *	feed one byte to tg_cmd_feed(), tg_reply_feed(), tg_tls_feed() and
 *	tg_tls_client_feed() and return what those return. The scanners of every program call them once per byte
 *	they read (bytes passed over by tg_cmd_skip() excepted).
 *
 *	Why global functions: the verifier checks a global function once per
 *	program, on its own, with its pointer argument as plain memory of the
 *	structure's size and the byte unknown; a caller sees only "returns a
 *	scalar". A parser inlined into a bpf_loop callback is instead checked
 *	again for every state in which the verifier meets the callback, and
 *	the parsers' many branches made that cost swing between a hundred
 *	thousand and over a million verifier steps on two builds of one
 *	kernel. The price is one BPF-to-BPF call per byte parsed.
 *
 *	The state pointer is never NULL in practice; for NULL they return
 *	the event that fails closed.
 */
#include "tg_common.bpf.h"

__noinline int tg_cmd_step(struct tg_cmd *p, __u32 c)
{
	if (!p)
		return TG_CMD_MAIL_BAD;
	return tg_cmd_feed(p, (unsigned char)c);
}

__noinline int tg_reply_step(struct tg_reply *r, __u32 c)
{
	if (!r)
		return TG_REPLY_BAD;
	return tg_reply_feed(r, (unsigned char)c);
}

__noinline int tg_tls_step(struct tg_tls *t, __u32 c)
{
	if (!t)
		return TG_TLS_BAD;
	return tg_tls_feed(t, (unsigned char)c);
}

__noinline int tg_tlsc_step(struct tg_tls_client *r, __u32 c)
{
	if (!r)
		return TG_TLS_BAD;
	return tg_tls_client_feed(r, (unsigned char)c);
}

/*
 * Whole 8-byte words of a DATA body from i (a multiple of 8) to the end
 * of b's window, taken at once by tg_body_words() up to the first word
 * that must be fed byte by byte: returns the bytes taken (p->body
 * updated), 0 for none. A global function for the same reason as the
 * parsers: its loop is checked once.
 */
__noinline __u32 tg_body_block(struct tg_cmd *p, const struct tg_blk *b,
			       __u32 i)
{
	__u32 at;

	if (!p || !b || (i & 7) || i < b->off)
		return 0;
	at = i - b->off;
	if (at >= b->n || b->n > TG_BLOCK)
		return 0;
	return 8 * tg_body_words(p, &b->buf[at & (TG_BLOCK - 8)],
				 (b->n - at) / 8);
}

/*
 * The bytes of the word at i (within b's window and its len) fed to the
 * command parser p in a DATA body, up to the first event. Returns the
 * number of bytes fed, and the event (TG_CMD_*) shifted left by 8. Global
 * for the same reason as the parsers: its loop is checked once.
 */
__noinline __u32 tg_body_bytes(struct tg_cmd *p, const struct tg_blk *b,
			       __u32 i)
{
	__u32 j, k;
	int ev;

	if (!p || !b || p->mode != TG_MODE_BODY)
		return TG_CMD_BODY_AMBIGUOUS << 8;
	for (k = 0; k < 8; k++) {
		j = i + k;
		if (j >= b->len || j - b->off >= b->n)
			return k;
		ev = tg_body_byte(p, tg_blk_at(b, j));
		if (ev != TG_CMD_NONE)
			return (k + 1) | (__u32)ev << 8;
	}
	return 8;
}
