// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	test_skip - the command parser's fast paths agree with feeding every
 *	byte
 * SYNOPSIS
 *	build/tests/test_skip
 * DESCRIPTION
 *	The BPF scanners take the words of a DATA body in which no line
 *	starts with "." up to eight at a time from a copy, or 64 in place
 *	(tg_body_words() and its steps, which set the body's state from
 *	them), and pass over BDAT chunk bytes by counting them down. This
 *	test runs both ways over the same streams, as the scanners do (words
 *	are taken only at a position that is a multiple of 8, at most 8 or
 *	64 of them, in place two at a time, the next one then fed byte by
 *	byte), and checks that the events and the final parser state are
 *	the same.
 *
 *	It also checks tg_bytes_eq8() and tg_had_dot() for every byte value
 *	at every position of a word among every other, and tg_body_words() against
 *	tg_cmd_feed() over random words of the bytes that matter to a body
 *	(LF, CR, ".", NUL, others) from each state it takes, and
 *	tg_reply_line(), which takes a one-line reply at once, against
 *	tg_reply_feed() over random segments after random prefixes;
 *	likewise tg_cmd_line(), which takes a one-line command at once,
 *	against tg_cmd_feed().
 * DIAGNOSTICS
 *	One line per failed check on stderr; "N passed, M failed" on stdout.
 */
#include <stdlib.h>

#include "tg_smtp.h"
#include "tg_test.h"

#define EV_MAX	64

struct run {
	int ev[EV_MAX];
	int n;
	struct tg_cmd p;
};

static void note(struct run *r, int ev)
{
	if (ev != TG_CMD_NONE && r->n < EV_MAX)
		r->ev[r->n++] = ev;
}

/* Every byte fed. */
static void run_slow(struct run *r, const unsigned char *b, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		note(r, tg_cmd_feed(&r->p, b[i]));
		if (r->p.mode == TG_MODE_CMD && r->p.verb == TG_VERB_DATA &&
		    r->p.line_len == 0 && r->n && r->ev[r->n - 1] == TG_CMD_LINE)
			tg_cmd_start_body(&r->p);
	}
}

/*
 * As tg_body_run() does: up to 64 words, two at a time
 * (tg_bwords_take2()); a last word alone is left. Returns the words
 * taken.
 */
static __u32 words_run(struct tg_cmd *p, const unsigned char *b, __u32 nw)
{
	struct tg_bwords s;
	__u64 w, w2;
	__u32 k, t;

	if (!tg_bwords_start(p, &s))
		return 0;
	for (k = 0; k < 64 && k + 2 <= nw; k += 2) {
		memcpy(&w, b + 8 * k, 8);
		memcpy(&w2, b + 8 * k + 8, 8);
		t = tg_bwords_take2(&s, w, w2);
		if (t < 2) {
			k += t;
			break;
		}
	}
	if (k > 0)
		tg_bwords_end(p, &s);
	return k;
}

static int run_inplace;	/* run_fast() takes words as tg_body_run() */

/* As the BPF scanners do: chunks counted down, body words taken at once. */
static void run_fast(struct run *r, const unsigned char *b, size_t len)
{
	size_t i = 0;
	__u32 k;

	while (i < len) {
		if (r->p.mode == TG_MODE_CHUNK && r->p.chunk_left > 1) {
			__u64 n = r->p.chunk_left - 1;

			if (n > len - i)
				n = len - i;
			r->p.chunk_left -= n;
			i += n;
			continue;
		}
		if (r->p.mode == TG_MODE_BODY && !(i & 7)) {
			k = run_inplace ? words_run(&r->p, b + i,
						    (__u32)((len - i) / 8)) :
					  tg_body_words(&r->p, b + i,
							(__u32)((len - i) / 8));
			i += 8 * k;
			/* the next word byte by byte, as tg_body_bytes() */
			for (k = 0; k < 8 && i < len; k++, i++) {
				note(r, tg_cmd_feed(&r->p, b[i]));
				if (r->p.mode != TG_MODE_BODY) {
					i++;
					break;
				}
			}
			continue;
		}
		note(r, tg_cmd_feed(&r->p, b[i]));
		if (r->p.mode == TG_MODE_CMD && r->p.verb == TG_VERB_DATA &&
		    r->p.line_len == 0 && r->n && r->ev[r->n - 1] == TG_CMD_LINE)
			tg_cmd_start_body(&r->p);
		i++;
	}
}

static void compare1(const char *what, const unsigned char *b, size_t len);

/* Both ways the BPF scanners take words: 8 a window, 64 in place. */
static void compare(const char *what, const unsigned char *b, size_t len)
{
	run_inplace = 0;
	compare1(what, b, len);
	run_inplace = 1;
	compare1(what, b, len);
}

static void compare1(const char *what, const unsigned char *b, size_t len)
{
	struct run a = { 0 }, f = { 0 };
	int k;

	tg_cmd_init(&a.p);
	tg_cmd_init(&f.p);
	run_slow(&a, b, len);
	run_fast(&f, b, len);
	CHECK(a.n == f.n, "%s: %d events fed byte by byte, %d skipping", what,
	      a.n, f.n);
	for (k = 0; k < a.n && k < f.n; k++)
		CHECK(a.ev[k] == f.ev[k], "%s: event %d: %d vs %d", what, k,
		      a.ev[k], f.ev[k]);
	CHECK(memcmp(&a.p, &f.p, sizeof(a.p)) == 0,
	      "%s: parser state differs at the end", what);
}

static void test_eq8(void)
{
	static const unsigned char others[] = { 0, 1, 0x7f, 0x80, 0xff, '\n',
						'\r', '.', 'a' };
	unsigned c, pos, o;
	__u64 w, m;

	tg_case("tg_bytes_eq8 marks exactly the bytes equal to c, "
		"tg_had_dot a \".\" anywhere");
	for (c = 0; c < 256; c++) {
		for (o = 0; o < sizeof(others); o++) {
			for (pos = 0; pos < 8; pos++) {
				w = TG_ONES8 * others[o];
				w &= ~(0xffULL << (8 * pos));
				w |= (__u64)c << (8 * pos);
				m = tg_bytes_eq8(w, (unsigned char)c);
				if (others[o] == c)
					CHECK(m == TG_HIGH8, "0x%02x among 0x%02x",
					      c, others[o]);
				else
					CHECK(m == 0x80ULL << (8 * pos),
					      "0x%02x at %u among 0x%02x", c, pos,
					      others[o]);
				/* a "." anywhere, as a yes or no */
				CHECK(!tg_had_dot(w ^ TG_DOTS8) ==
					      (c != '.' && others[o] != '.'),
				      "tg_had_dot: 0x%02x at %u among 0x%02x", c,
				      pos, others[o]);
			}
		}
	}
}

/* tg_body_words() over n words at b, from state st, against every byte fed. */
static void check_words(const unsigned char *b, __u32 nw, __u8 st)
{
	struct tg_cmd slow, fast;
	__u32 k, j;
	int ev = TG_CMD_NONE;

	tg_cmd_init(&slow);
	tg_cmd_start_body(&slow);
	slow.body = st;
	fast = slow;
	k = tg_body_words(&fast, b, nw);
	CHECK(k <= nw, "took %u of %u words", k, nw);
	for (j = 0; j < 8 * k && ev == TG_CMD_NONE; j++)
		ev = tg_cmd_feed(&slow, b[j]);
	CHECK(ev == TG_CMD_NONE, "an event (%d) in words taken at once", ev);
	CHECK(memcmp(&slow, &fast, sizeof(slow)) == 0,
	      "state 0x%02x, %u words: body 0x%02x at once, 0x%02x fed", st, k,
	      fast.body, slow.body);
	/* the word it stopped at has a line that starts with "." */
	if (k < nw) {
		int dot = 0;

		for (j = 8 * k; j < 8 * k + 8; j++)
			if (b[j] == '.' &&
			    (j == 0 ? (st & ~TG_BODY_BARE) == TG_BODY_SOL :
				      b[j - 1] == '\n'))
				dot = 1;
		CHECK(dot || (k == 0 && (st & ~TG_BODY_BARE) != TG_BODY_MID &&
			      (st & ~TG_BODY_BARE) != TG_BODY_MIDCR &&
			      (st & ~TG_BODY_BARE) != TG_BODY_SOL),
		      "stopped at word %u of %u with no line starting with \".\"",
		      k, nw);
	}
}

static void test_words(void)
{
	static const unsigned char alpha[] = { '\n', '\r', '.', 0, 'a', ' ' };
	static const __u8 states[] = { TG_BODY_MID, TG_BODY_MIDCR, TG_BODY_SOL,
				       TG_BODY_DOT, TG_BODY_DOTCR };
	unsigned char b[64];
	size_t i, j, s, bare;

	tg_case("tg_body_words agrees with tg_cmd_feed on random words");
	srandom(11);
	for (i = 0; i < 200000; i++) {
		/* mostly text, so that runs of words get taken */
		int rare = 2 + (int)(i % 30);

		for (j = 0; j < sizeof(b); j++)
			b[j] = random() % rare ? 'a' + random() % 26 :
			       alpha[random() % sizeof(alpha)];
		s = i % sizeof(states);
		bare = (i / sizeof(states)) % 2 ? TG_BODY_BARE : 0;
		check_words(b, 1 + (__u32)(random() % 8), states[s] | bare);
	}
}

static const char *const streams[] = {
	"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
	"Subject: a long enough line to have whole quiet words in it\r\n"
	"\r\n..dot stuffed line, and more text after it to skip\r\n"
	"a line\rwith a bare CR in its middle, then more words\r\n"
	"a line\nwith a bare LF in its middle, then more words\r\n"
	".\r\nMAIL FROM:<e@f>\r\nQUIT\r\n",
	"EHLO a\r\nBDAT 40\r\n0123456789012345678901234567890123456789"
	"BDAT 9 LAST\r\nMAIL FROM\r\nMAIL FROM:<g@h>\r\n",
	"DATA\r\n.\r\nDATA\r\nx\r\n.\r\n",
};

static void test_streams(void)
{
	size_t i, k, len;
	unsigned char buf[2048];

	for (i = 0; i < TG_NELEM(streams); i++) {
		tg_case("stream %zu: byte by byte and skipping agree", i);
		compare("as written", (const unsigned char *)streams[i],
			strlen(streams[i]));
		/* every alignment of the stream against the words */
		for (k = 1; k < 8; k++) {
			len = strlen(streams[i]);
			memset(buf, 'x', k);
			buf[k - 1] = '\n';
			memcpy(buf + k, streams[i], len);
			compare("shifted", buf, len + k);
		}
	}
	tg_case("random bodies: byte by byte and skipping agree");
	srandom(7);
	for (i = 0; i < 2000; i++) {
		static const char alpha[] = "ab.\r\n \tMAIL FROM:<x@y>BDAT 9";

		len = 8 + (size_t)random() % (sizeof(buf) - 64);
		memcpy(buf, "DATA\r\n", 6);
		for (k = 6; k < len; k++)
			buf[k] = (random() % 4) ?
				 'a' + random() % 26 :
				 (unsigned char)alpha[random() %
						      (sizeof(alpha) - 1)];
		compare("random", buf, len);
	}
}

/* The events fed after a segment, both ways: they must be the same. */
static void same_events(const char *what, const int *ea, int na,
			const int *ef, int nf)
{
	int k;

	CHECK(na == nf, "%s: after it, %d events vs %d", what, na, nf);
	for (k = 0; k < na && k < nf; k++)
		CHECK(ea[k] == ef[k], "%s: after it, event %d: %d vs %d", what,
		      k, ea[k], ef[k]);
}

/*
 * Replies: a segment that tg_reply_line() takes must leave the parser as
 * feeding it would, up to the fields the next line resets (the keyword
 * and the line's flags, which it does not read), and raise FINAL at its
 * LF; one it refuses must leave the parser untouched. Random prefixes
 * put the parser in every state; random suffixes then show that what
 * follows reads the same either way.
 */
static int reply_events(struct tg_reply *r, const unsigned char *b,
			size_t len, int *ev, int max)
{
	size_t i;
	int n = 0, e;

	for (i = 0; i < len; i++) {
		e = tg_reply_feed(r, b[i]);
		if (e != TG_REPLY_NONE && n < max)
			ev[n++] = e * 1000 + r->code;
	}
	return n;
}

static void random_reply_bytes(unsigned char *b, size_t len)
{
	static const unsigned char alpha[] = "0123456789 -\r\n\t\nSTARTLS";
	size_t j;

	for (j = 0; j < len; j++)
		b[j] = random() % 3 ? (unsigned char)alpha[random() %
							   (sizeof(alpha) - 1)] :
				      (unsigned char)random();
}

static void test_reply_line(void)
{
	unsigned char pre[16], seg[TG_RLINE_MAX + 8], buf[TG_RLINE_MAX],
		post[40];
	struct tg_reply a, f, before;
	int ea[EV_MAX], ef[EV_MAX], na, nf, k, took = 0;
	size_t i, len, npre;

	tg_case("tg_reply_line agrees with tg_reply_feed on random segments");
	srandom(13);
	for (i = 0; i < 300000; i++) {
		tg_reply_init(&a);
		npre = (size_t)random() % 3 ? 0 : (size_t)random() % sizeof(pre);
		random_reply_bytes(pre, npre);
		if (npre && random() % 2)
			pre[npre - 1] = '\n';
		reply_events(&a, pre, npre, ea, EV_MAX);

		len = 1 + (size_t)random() % (TG_RLINE_MAX + 4);
		random_reply_bytes(seg, len);
		if (random() % 2) {	/* mostly well-formed: the fast case */
			seg[0] = '0' + random() % 10;
			seg[1] = '0' + random() % 10;
			seg[2] = '0' + random() % 10;
			if (len > 3)
				seg[3] = random() % 8 ? ' ' : '-';
			for (k = 4; k + 1 < (int)len; k++)
				if (seg[k] == '\n' && random() % 8)
					seg[k] = 'x';
			seg[len - 1] = random() % 8 ? '\n' : 'x';
		}
		memset(buf, 0, sizeof(buf));
		memcpy(buf, seg, len < sizeof(buf) ? len : sizeof(buf));

		memcpy(&f, &a, sizeof(f));
		memcpy(&before, &a, sizeof(before));
		if (tg_reply_line(&f, buf, (__u32)len)) {
			took++;
			na = reply_events(&a, seg, len, ea, EV_MAX);
			CHECK(na == 1 && ea[0] == TG_REPLY_FINAL * 1000 + f.code,
			      "%s: fed, %d events, first %d; taken: FINAL %u",
			      tg_esc(seg, len), na, na ? ea[0] : 0, f.code);
			CHECK(a.code == f.code && a.sep == f.sep &&
				      a.bad == f.bad && a.line_len == f.line_len &&
				      a.cr == f.cr && a.new_reply == f.new_reply &&
				      a.first == f.first,
			      "%s: state differs after the line",
			      tg_esc(seg, len));
		} else {
			CHECK(memcmp(&f, &before, sizeof(f)) == 0,
			      "%s: refused, but the parser changed",
			      tg_esc(seg, len));
			reply_events(&f, seg, len, ef, EV_MAX);
			reply_events(&a, seg, len, ea, EV_MAX);
		}
		random_reply_bytes(post, sizeof(post));
		na = reply_events(&a, post, sizeof(post), ea, EV_MAX);
		nf = reply_events(&f, post, sizeof(post), ef, EV_MAX);
		same_events(tg_esc(seg, len), ea, na, ef, nf);
		CHECK(a.new_reply == f.new_reply && a.line_len == f.line_len &&
			      a.starttls == f.starttls &&
			      a.chunking == f.chunking && a.first == f.first,
		      "%s: state differs after what follows",
		      tg_esc(seg, len));
	}
	CHECK(took > 10000, "only %d segments taken at once", took);
}

/*
 * Commands: a write that tg_cmd_line() takes must raise TG_CMD_LINE at
 * its LF when fed, and leave what the scanner reads then (verb, CR,
 * transaction) and, once a next line has started, the whole parser as
 * feeding it would; one it refuses must leave the parser untouched.
 */
static int cmd_events(struct tg_cmd *p, const unsigned char *b, size_t len,
		      int *ev, int max)
{
	size_t i;
	int n = 0, e;

	for (i = 0; i < len; i++) {
		e = tg_cmd_feed(p, b[i]);
		if (e != TG_CMD_NONE && n < max)
			ev[n++] = e;
	}
	return n;
}

static void test_cmd_line(void)
{
	static const char *const verbs[] = { "RCPT", "rcpt", "DATA", "QUIT",
					     "EHLO", "HELO", "RSET", "NOOP",
					     "MAIL", "BDAT", "VRFY", "Ma1l" };
	static const char *const pres[] = { "", "MAIL FROM:<a@b>\r\n", "EHLO",
					    "DATA\r\n", "BDAT 5\r\n",
					    "BDAT 2 LAST\r\nxy" };
	static const unsigned char alpha[] = "aZ :<>@.\r\n\t\v";
	unsigned char seg[TG_CLINE_MAX + 8], buf[TG_CLINE_MAX], post[24];
	struct tg_cmd a, f, before;
	int ea[EV_MAX], ef[EV_MAX], na, nf, took = 0;
	size_t i, j, len;

	tg_case("tg_cmd_line agrees with tg_cmd_feed on random writes");
	srandom(17);
	for (i = 0; i < 300000; i++) {
		const char *pre = pres[random() % TG_NELEM(pres)];

		tg_cmd_init(&a);
		a.no_chunking = random() % 2;
		a.rcpt_paths = random() % 4 == 0;
		cmd_events(&a, (const unsigned char *)pre, strlen(pre), ea,
			   EV_MAX);
		if (random() % 3 == 0)
			tg_cmd_start_body(&a);

		len = 1 + (size_t)random() % (TG_CLINE_MAX + 4);
		memcpy(seg, verbs[random() % TG_NELEM(verbs)], 4);
		for (j = 4; j < len; j++)
			seg[j] = random() % 4 ? 'a' + random() % 26 :
			         random() % 2 ? alpha[random() %
						      (sizeof(alpha) - 1)] :
					        (unsigned char)random();
		if (len > 4 && random() % 2)
			seg[4] = random() % 4 ? ' ' : '\r';
		for (j = 4; j + 1 < len; j++)
			if (seg[j] == '\n' && random() % 8)
				seg[j] = 'x';
		if (len > 1 && random() % 2)
			seg[len - 2] = '\r';
		seg[len - 1] = random() % 8 ? '\n' : 'x';
		if (random() % 8 == 0 && len == 7)
			memcpy(seg, "DATA\r\n", 6);
		memset(buf, 0, sizeof(buf));
		memcpy(buf, seg, len < sizeof(buf) ? len : sizeof(buf));

		memcpy(&f, &a, sizeof(f));
		memcpy(&before, &a, sizeof(before));
		if (tg_cmd_line(&f, buf, (__u32)len)) {
			took++;
			na = cmd_events(&a, seg, len, ea, EV_MAX);
			CHECK(na == 1 && ea[0] == TG_CMD_LINE,
			      "%s: fed, %d events, first %d", tg_esc(seg, len),
			      na, na ? ea[0] : 0);
			CHECK(a.verb == f.verb && a.cr == f.cr && a.tx == f.tx &&
				      a.line_len == f.line_len &&
				      a.mode == f.mode && a.phase == f.phase &&
				      a.addr_key == f.addr_key &&
				      a.domain_key == f.domain_key,
			      "%s: state differs after the line",
			      tg_esc(seg, len));
		} else {
			CHECK(memcmp(&f, &before, sizeof(f)) == 0,
			      "%s: refused, but the parser changed",
			      tg_esc(seg, len));
			cmd_events(&f, seg, len, ef, EV_MAX);
			cmd_events(&a, seg, len, ea, EV_MAX);
		}
		for (j = 0; j < sizeof(post); j++)
			post[j] = alpha[random() % (sizeof(alpha) - 1)];
		na = cmd_events(&a, post, sizeof(post), ea, EV_MAX);
		nf = cmd_events(&f, post, sizeof(post), ef, EV_MAX);
		same_events(tg_esc(seg, len), ea, na, ef, nf);
		CHECK(memcmp(&a, &f, sizeof(a)) == 0,
		      "%s: parser state differs after what follows",
		      tg_esc(seg, len));
	}
	CHECK(took > 10000, "only %d writes taken at once", took);
}

int main(void)
{
	test_eq8();
	test_words();
	test_streams();
	test_reply_line();
	test_cmd_line();
	return tg_test_done();
}
