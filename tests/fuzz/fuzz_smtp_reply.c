// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	fuzz_smtp_reply - libFuzzer target for the SMTP reply parser
 * SYNOPSIS
 *	build/fuzz/fuzz_smtp_reply [libFuzzer options] [corpus or input...]
 * DESCRIPTION
 *	The whole input is what an SMTP server writes. It goes to
 *	tg_reply_feed() (include/tg_smtp.h) in one piece, cut at one point
 *	and cut in many pieces (cut points derived from the input, the state
 *	moving between heap blocks at each cut): the events must be the same.
 *
 *	Three readers, written here from the clients' sources over whole
 *	lines (never byte by byte), say how each line ends:
 * .IP "Postfix 3.7 (smtp_get(), smtp_chat_resp())"
 *	a line ends at LF; at most 2048 bytes of it are read (the rest is
 *	skipped), and every CR before the LF is dropped when the line fits;
 *	the line is a C string (it ends at a NUL). Three digits then '-'
 *	continue the reply, three digits then a space or the end end it;
 *	anything else is garbage, which Postfix reads as part of the reply.
 *	The code is that of the last line.
 * .IP "Exim 4.96 (read_response_line(), smtp_read_response())"
 *	trailing isspace() bytes dropped; three digits then '-' continue,
 *	then a space or NUL (or the end) end the reply; anything else aborts
 *	the session. The reply's class is its first line's first digit.
 * .IP "OpenSMTPD 6.8 (mta_session.c, parse_smtp_response())"
 *	one CR before the LF dropped; fewer than three bytes, a line of 2048
 *	bytes or more, or a code not 2..5 followed by two digits abort the
 *	session; otherwise '-' at offset 3 continues and anything else ends
 *	the reply. Its class is its first line's first digit.
 * .PP
 *	Each line must give the event these readers call for: AMBIGUOUS when
 *	Exim or OpenSMTPD (without aborting) ends the reply where Postfix
 *	does not or the other way round, or when Postfix ends a reply whose
 *	first line was a continuation of another class; else FINAL, CONT,
 *	or BAD (Postfix's garbage, which the others abort on). Replies are
 *	grouped as Postfix groups them.
 *
 *	Differential: the replies tg_reply_feed() ends (FINAL, and AMBIGUOUS
 *	with r->new_reply set) are Postfix's replies, one for one, at the
 *	same byte and with the same code.
 *
 *	At each event, r->starttls must say whether a line of the reply so
 *	far has STARTTLS (any case) as its first word after offset 3 (white
 *	space: space and tab; the CRs before the LF dropped).
 * DIAGNOSTICS
 *	A failed check prints the input, the line, what was expected and
 *	what the parser gave, then aborts (libFuzzer saves the input).
 */
#include "tg_smtp.h"
#include "fuzz_common.h"

#include <stdint.h>

#define MAX_IN		65536
#define PF_LIMIT	2048	/* Postfix line_length_limit */
#define OS_LINE_MAX	2048	/* OpenSMTPD: LINE_MAX on Linux */

enum { R_ERR, R_CONT, R_FINAL, R_GARBAGE };

struct rev {
	int type;
	int code;
	int starttls;
	int ends;		/* the reply ended here (Postfix) */
	size_t at;		/* offset of the LF */
};

struct rlist {
	size_t n;
	struct rev *v;
};

static const char *rname(int type)
{
	switch (type) {
	case TG_REPLY_NONE:
		return "NONE";
	case TG_REPLY_FINAL:
		return "FINAL";
	case TG_REPLY_CONT:
		return "CONT";
	case TG_REPLY_BAD:
		return "BAD";
	case TG_REPLY_AMBIGUOUS:
		return "AMBIGUOUS";
	}
	return "?";
}

static int is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int c_isspace(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' ||
	       c == '\r';
}

/* Postfix: the line l[0..m) as smtp_get() leaves it, then the decision. */
static int pf_line(const unsigned char *l, size_t m)
{
	size_t n = m > PF_LIMIT ? PF_LIMIT : m, d = 0;
	const unsigned char *nul;

	if (m <= PF_LIMIT)
		while (n > 0 && l[n - 1] == '\r')
			n--;
	nul = memchr(l, 0, n);
	if (nul)
		n = (size_t)(nul - l);
	while (d < n && is_digit(l[d]))
		d++;
	if (d != 3)
		return R_GARBAGE;
	if (n > 3 && l[3] == '-')
		return R_CONT;
	if (n == 3 || l[3] == ' ')
		return R_FINAL;
	return R_GARBAGE;
}

static int exim_line(const unsigned char *l, size_t m)
{
	size_t n = m;
	unsigned char p3;

	while (n > 0 && c_isspace(l[n - 1]))
		n--;
	if (n < 3 || !is_digit(l[0]) || !is_digit(l[1]) || !is_digit(l[2]))
		return R_ERR;
	p3 = n > 3 ? l[3] : 0;
	if (p3 == '-')
		return R_CONT;
	if (p3 == ' ' || p3 == 0)
		return R_FINAL;
	return R_ERR;
}

static int smtpd_line(const unsigned char *l, size_t m)
{
	size_t n = m;

	if (n && l[n - 1] == '\r')
		n--;
	if (n >= OS_LINE_MAX || n < 3)
		return R_ERR;
	if (l[0] < '2' || l[0] > '5' || !is_digit(l[1]) || !is_digit(l[2]))
		return R_ERR;
	if (n > 3 && l[3] == '-')
		return R_CONT;
	return R_FINAL;
}

/* Does the first word of l[4..n) spell STARTTLS? */
static int ref_starttls(const unsigned char *l, size_t n)
{
	static const char word[] = "STARTTLS";
	size_t i = 4, start, k;

	while (i < n && (l[i] == ' ' || l[i] == '\t'))
		i++;
	start = i;
	while (i < n && l[i] != ' ' && l[i] != '\t')
		i++;
	if (i - start != 8)
		return 0;
	for (k = 0; k < 8; k++) {
		unsigned char c = l[start + k];

		if (c >= 'a' && c <= 'z')
			c = c - 'a' + 'A';
		if (c != (unsigned char)word[k])
			return 0;
	}
	return 1;
}

static void ref_replies(const unsigned char *s, size_t len, struct rlist *out)
{
	size_t i = 0;
	int group_tls = 0, first_line = 1, first_class = 0;

	out->n = 0;
	while (i < len) {
		const unsigned char *lf = memchr(s + i, '\n', len - i);
		const unsigned char *l = s + i;
		struct rev *e;
		size_t j, m, w;
		int pf, ex, os, code = 0, pf_end, amb;

		if (!lf)
			break;
		j = (size_t)(lf - s);
		m = j - i;
		e = &out->v[out->n++];
		pf = pf_line(l, m);
		if (m >= 3 && is_digit(l[0]) && is_digit(l[1]) &&
		    is_digit(l[2]))	/* atoi() of a line that ends a reply */
			code = (l[0] - '0') * 100 + (l[1] - '0') * 10 +
			       (l[2] - '0');
		ex = exim_line(l, m);
		os = smtpd_line(l, m);
		pf_end = pf == R_FINAL;
		if (first_line)
			first_class = 0;
		amb = (ex != R_ERR && (ex == R_FINAL) != pf_end) ||
		      (os != R_ERR && (os == R_FINAL) != pf_end);
		if (pf_end && first_class && first_class != l[0])
			amb = 1;
		if (amb)
			e->type = TG_REPLY_AMBIGUOUS;
		else
			e->type = pf == R_FINAL ? TG_REPLY_FINAL :
				  pf == R_CONT	? TG_REPLY_CONT :
						  TG_REPLY_BAD;
		e->code = e->type == TG_REPLY_BAD ? 0 : code;
		e->ends = pf_end;
		e->at = j;
		if (first_line && pf == R_CONT)
			first_class = l[0];
		w = m;
		while (w > 0 && l[w - 1] == '\r')
			w--;
		group_tls |= w > 4 && ref_starttls(l, w);
		e->starttls = group_tls;
		first_line = pf_end;
		if (pf_end)
			group_tls = 0;
		i = j + 1;
	}
}

static void run(const unsigned char *s, size_t len, const size_t *cuts,
		size_t ncuts, struct rlist *out)
{
	struct tg_reply *r = malloc(sizeof(*r));
	size_t i, k = 0;

	if (!r)
		abort();
	tg_reply_init(r);
	out->n = 0;
	for (i = 0; i < len; i++) {
		int ev;

		if (k < ncuts && cuts[k] == i) {
			r = fz_move_state(r, sizeof(*r));
			k++;
		}
		ev = tg_reply_feed(r, s[i]);
		if (ev == TG_REPLY_NONE)
			continue;
		out->v[out->n].type = ev;
		out->v[out->n].code = ev == TG_REPLY_BAD ? 0 : r->code;
		out->v[out->n].starttls = !!r->starttls;
		out->v[out->n].ends = ev == TG_REPLY_FINAL ||
				      (ev == TG_REPLY_AMBIGUOUS && r->new_reply);
		out->v[out->n].at = i;
		out->n++;
	}
	free(r);
}

/* The line that ends at offset at, for messages. */
static const char *line_at(const unsigned char *s, size_t at)
{
	size_t b = at;

	while (b > 0 && s[b - 1] != '\n')
		b--;
	return fz_esc(s + b, at + 1 - b);
}

static void compare(const char *what, const unsigned char *s, size_t len,
		    const struct rlist *got, const struct rlist *want)
{
	size_t i;

	for (i = 0; i < got->n && i < want->n; i++) {
		const struct rev *g = &got->v[i], *w = &want->v[i];

		if (g->type != w->type || g->code != w->code ||
		    g->starttls != w->starttls || g->ends != w->ends ||
		    g->at != w->at)
			FUZZ_FAIL("input \"%s\": %s: event %zu at %zu is "
				  "%s %d starttls=%d ends=%d, expected %s %d "
				  "starttls=%d ends=%d at %zu (line \"%s\")",
				  fz_esc(s, len), what, i, g->at,
				  rname(g->type), g->code, g->starttls, g->ends,
				  rname(w->type), w->code, w->starttls, w->ends,
				  w->at,
				  line_at(s, w->at < g->at ? w->at : g->at));
	}
	FUZZ_CHECK(got->n == want->n,
		   "input \"%s\": %s: %zu events, expected %zu",
		   fz_esc(s, len), what, got->n, want->n);
}

/*
 * The differential on its own terms: the replies the parser ends are
 * Postfix's, one for one, with Postfix's codes.
 */
static void differential(const unsigned char *s, size_t len,
			 const struct rlist *got, const struct rlist *pf)
{
	size_t i = 0, k = 0;

	for (;;) {
		while (i < got->n && !got->v[i].ends)
			i++;
		while (k < pf->n && !pf->v[k].ends)
			k++;
		if (i == got->n || k == pf->n)
			break;
		FUZZ_CHECK(got->v[i].at == pf->v[k].at &&
				   got->v[i].code == pf->v[k].code,
			   "input \"%s\": the parser ends a reply at %zu with "
			   "code %d, Postfix at %zu with code %d",
			   fz_esc(s, len), got->v[i].at, got->v[i].code,
			   pf->v[k].at, pf->v[k].code);
		i++;
		k++;
	}
	FUZZ_CHECK(i == got->n && k == pf->n,
		   "input \"%s\": the parser and Postfix read a different "
		   "number of replies", fz_esc(s, len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rev v1[MAX_IN + 1], v2[MAX_IN + 1], v3[MAX_IN + 1];
	static size_t cuts[MAX_IN];
	struct rlist one = { 0, v1 }, split = { 0, v2 }, ref = { 0, v3 };
	size_t len = size > MAX_IN ? MAX_IN : size, nc;
	int many;

	run(data, len, NULL, 0, &one);
	ref_replies(data, len, &ref);
	differential(data, len, &one, &ref);
	compare("reference", data, len, &one, &ref);
	for (many = 0; many < 2; many++) {
		nc = fz_cuts(data, len, 0, many, cuts, FZ_NELEM(cuts));
		run(data, len, cuts, nc, &split);
		compare(many ? "cut in many pieces" : "cut in two", data, len,
			&split, &one);
	}
	return 0;
}
