// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	fuzz_smtp_cmd - libFuzzer target for the SMTP command parser
 * SYNOPSIS
 *	build/fuzz/fuzz_smtp_cmd [libFuzzer options] [corpus or input...]
 * DESCRIPTION
 *	Feeds what an SMTP client writes to tg_cmd_feed() (include/tg_smtp.h)
 *	and checks, for every input:
 * .IP "split invariance"
 *	the events (type, verb, addr_key, domain_key) are the same when the
 *	input is fed in one piece, cut at one data-derived point, or cut in
 *	many pieces, the state moving between heap blocks at each cut.
 * .IP "framing"
 *	an independent reference splits the stream into command lines,
 *	DATA bodies and BDAT chunks: each event comes at the byte the
 *	reference says, a line event has the verb the reference reads, and
 *	a line is a MAIL event (MAIL, MAIL_NULL or MAIL_BAD) exactly when
 *	its verb is MAIL. A BDAT line frames a chunk when it is "BDAT"
 *	spaces 1..10 digits [spaces "LAST"] [spaces] [CR], at most
 *	TG_CHUNK_MAX, after MAIL and before the transaction ends (RSET,
 *	HELO, EHLO, QUIT, the end of a body or of a LAST chunk); any other
 *	line with the verb BDAT, or with a control byte or bare CR inside a
 *	verb that is a prefix of BDAT, is TG_CMD_CHUNK_BAD.
 * .IP "holding"
 *	tg_cmd_holding() is true after every proper prefix of a line that
 *	ends up as a MAIL event: none of its bytes may leave early.
 * .IP "length"
 *	a MAIL line is judged by its address, however long the line: the
 *	address of a TG_CMD_MAIL lies within the first TG_LINE_MAX bytes.
 * .IP "server model"
 *	each command line is also read the way Postfix smtpd (3.7) reads it:
 *	white space is isspace() (so \ev, \ef and a bare CR separate words),
 *	the line ends at the first NUL, and "MAIL FROM:" is two tokens. A
 *	line that server takes as MAIL FROM a non-null address must be
 *	TG_CMD_MAIL or TG_CMD_MAIL_BAD; when the address is plain
 *	(local@domain in [A-Za-z0-9._+-]), a TG_CMD_MAIL must carry its key.
 * .IP "sender bytes"
 *	for a MAIL event, the bytes at addr_start, addr_len bytes long (what
 *	the BPF program copies for tlsguardctl) give the same key through
 *	tg_addr_key(), the function that reads the senders file.
 * .PP
 *	The body of a DATA starts after a DATA line, as when the server
 *	answered 354, and after the lines that a mask from the input picks.
 *	It ends (framing reference) where Postfix smtpd, Exim and OpenSMTPD
 *	all end it (TG_CMD_BODY_END), or where some of them do
 *	(TG_CMD_BODY_AMBIGUOUS); a line starts after LF only.
 *
 *	Input: a first byte 0x00..0x07 is a flags byte, followed by two
 *	bytes of body mask (bit i: tg_cmd_start_body() after the i-th line
 *	event, i < 16) and one byte of cut seed; the rest is the payload.
 *	Any other first byte starts a plain client stream, with the default
 *	flags (so the seed corpus holds readable SMTP transcripts). Flags:
 * .IP "1 (grammar)"
 *	the payload does not go to the parser: it chooses, byte by byte, the
 *	parts of one MAIL line ("MAIL FROM:<" local "@" domain ">" with case,
 *	white space, a bracketed or bare address, a source route, ESMTP
 *	parameters, lengths up to beyond TG_ADDR_MAX and TG_LINE_MAX) whose
 *	event and keys a reference computes independently: FNV-1a of the
 *	address, lower case, "+extension" dropped, a trailing dot of the
 *	domain dropped (not after a dot).
 * .IP "2 (no 354)"
 *	a DATA line does not start a body (the server refused DATA).
 * .IP "4 (no CHUNKING)"
 *	without grammar: the host did not offer CHUNKING (no_chunking).
 * .IP "4 (equivalent forms)"
 *	with grammar: one decoration that Postfix smtpd accepts and reads as
 *	the same plain address (checked with a real smtpd 3.7.11): \ev, \ef or
 *	a bare CR between MAIL and FROM, \ef or \ev before MAIL, a quoted
 *	local part, a comment after the local part or the domain, a
 *	backslash before a letter of the local part, ";" before the ">". The
 *	parser must then give TG_CMD_MAIL_BAD or TG_CMD_MAIL with the key of
 *	the plain address: anything else lets the sender past tlsguard.
 * DIAGNOSTICS
 *	A failed check prints the input, what was expected and what the
 *	parser gave, then aborts (libFuzzer saves the input).
 * SEE ALSO
 *	tests/fuzz/README.md, include/tg_smtp.h
 */
#include "tg_smtp.h"
#include "fuzz_common.h"

#include <stdint.h>

#define MAX_IN		65536	/* longer inputs are cut here */
#define MAX_CUTS	MAX_IN

#define FL_GRAMMAR	0x01
#define FL_NO354	0x02
#define FL_EQUIV	0x04	/* with FL_GRAMMAR */
#define FL_NO_CHUNKING	0x04	/* without it */

#define EV_MAILISH	100	/* reference: MAIL, MAIL_NULL or MAIL_BAD */
#define EV_LINE_OR_BAD	101	/* reference: LINE with its verb, or MAIL_BAD */

struct ev {
	int type;
	__u64 verb;
	__u64 addr_key;
	__u64 domain_key;
	size_t at;		/* offset of the byte that gave the event */
};

struct evlist {
	size_t n;
	struct ev *v;		/* room for one event per input byte */
};

struct ctl {
	int flags;
	__u16 body_mask;
	__u32 seed;
};

static const char *ev_name(int type)
{
	static const char *names[] = {
		[TG_CMD_NONE] = "NONE",		  [TG_CMD_LINE] = "LINE",
		[TG_CMD_MAIL] = "MAIL",		  [TG_CMD_MAIL_NULL] = "MAIL_NULL",
		[TG_CMD_MAIL_BAD] = "MAIL_BAD",	  [TG_CMD_BODY_END] = "BODY_END",
		[TG_CMD_CHUNK_END] = "CHUNK_END",
		[TG_CMD_BODY_AMBIGUOUS] = "BODY_AMBIGUOUS",
		[TG_CMD_CHUNK_BAD] = "CHUNK_BAD",
	};

	if (type == EV_MAILISH)
		return "MAIL/MAIL_NULL/MAIL_BAD";
	if (type == EV_LINE_OR_BAD)
		return "LINE/MAIL_BAD";
	if (type < 0 || type >= (int)FZ_NELEM(names))
		return "?";
	return names[type];
}

static int is_mailish(int type)
{
	return type == TG_CMD_MAIL || type == TG_CMD_MAIL_NULL ||
	       type == TG_CMD_MAIL_BAD;
}

/* ------------------------------------------------------------------ */
/* Reference: keys, verbs, framing                                     */

static unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

/*
 * The policy form of a plain address: ASCII lower case, a "+extension"
 * (from a '+' that is not the first byte of the local part up to the
 * '@') dropped, and a trailing dot of the domain dropped unless a dot
 * comes before it (Postfix trivial-rewrite). The domain key is that of
 * "@domain".
 */
static __u64 ref_key(const char *local, size_t llen, const char *dom,
		     size_t dlen, int has_dom, __u64 *dkey)
{
	static char buf[2 * MAX_IN + 2];
	size_t n = 0, i;

	for (i = 0; i < llen; i++) {
		if (i > 0 && local[i] == '+')
			break;
		buf[n++] = (char)lower((unsigned char)local[i]);
	}
	*dkey = 0;
	/* a trailing dot is dropped, but not after a dot or the '@' */
	if (has_dom && dlen >= 2 && dom[dlen - 1] == '.' && dom[dlen - 2] != '.')
		dlen--;
	if (has_dom) {
		size_t at = n;

		buf[n++] = '@';
		for (i = 0; i < dlen; i++)
			buf[n++] = (char)lower((unsigned char)dom[i]);
		*dkey = fz_fnv(buf + at, n - at);
	}
	return fz_fnv(buf, n);
}

static int ref_space(unsigned char c)
{
	return c == ' ' || c == '\t';
}

/*
 * A command line as the parser's framing reads it: every CR in it is
 * ignored (the parser's choice; the server model below reads CR as a
 * server does), white space is space and tab.
 */
static size_t ref_strip_cr(const unsigned char *line, size_t len,
			   unsigned char *out)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++)
		if (line[i] != '\r')
			out[n++] = line[i];
	return n;
}

/* Verb of a line (CRs stripped), packed as TG_VERB_*; *rest after it. */
static __u64 ref_verb(const unsigned char *l, size_t n, size_t *rest)
{
	size_t i = 0, start, k;
	__u64 v = 0;

	while (i < n && ref_space(l[i]))
		i++;
	start = i;
	while (i < n && !ref_space(l[i]))
		i++;
	*rest = i;
	if (i - start > 8)
		return TG_VERB_LONG;
	for (k = start; k < i; k++) {
		unsigned char c = l[k];

		if (c >= 'a' && c <= 'z')
			c = c - 'a' + 'A';
		v |= (__u64)c << (8 * (k - start));
	}
	return v;
}

/*
 * A raw BDAT line (without its LF) in the one form the parser frames:
 * "BDAT" (any case, first on the line), spaces, 1 to 10 digits, and
 * optionally spaces and "LAST" (any case), then spaces and one CR at
 * most. Returns 1 and the size, and whether LAST was given.
 */
static int ref_bdat(const unsigned char *l, size_t n, __u64 *size, int *last)
{
	size_t i = 4, d = 0;

	*size = 0;
	*last = 0;
	if (n && l[n - 1] == '\r')
		n--;
	if (n < 6 || lower(l[0]) != 'b' || lower(l[1]) != 'd' ||
	    lower(l[2]) != 'a' || lower(l[3]) != 't' || l[4] != ' ')
		return 0;
	while (i < n && l[i] == ' ')
		i++;
	while (i < n && l[i] >= '0' && l[i] <= '9' && d < 11) {
		*size = *size * 10 + (__u64)(l[i] - '0');
		d++;
		i++;
	}
	if (d == 0 || d > 10)
		return 0;
	while (i < n && l[i] == ' ')
		i++;
	if (i + 4 <= n && l[i - 1] == ' ' && lower(l[i]) == 'l' &&
	    lower(l[i + 1]) == 'a' && lower(l[i + 2]) == 's' &&
	    lower(l[i + 3]) == 't') {
		*last = 1;
		i += 4;
		while (i < n && l[i] == ' ')
			i++;
	}
	return i == n;
}

/*
 * Where a DATA body that starts at s[from] ends, line by line (a line
 * ends at LF), as each server reads it: Postfix smtpd with
 * smtpd_forbid_bare_newline = no (every CR before the LF dropped, then
 * "."; the 2048-byte line limit is left out: a dot line with that many
 * CRs counts as an end, which only makes the parser stricter), Postfix
 * with = normalize (one CR dropped, "." with CR LF after a line that
 * ended in CR LF, or at the start), Exim 4.96 ("." or "." CR), Exim
 * 4.97.1 with strict CRLF (as normalize), OpenSMTPD 6.8 (one CR dropped,
 * then "." as a C string). Returns the offset of the LF of the first
 * line that any of them ends the body at, and in *type TG_CMD_BODY_END
 * when all do, TG_CMD_BODY_AMBIGUOUS when not; len if none.
 */
static size_t ref_body_end(const unsigned char *s, size_t from, size_t len,
			   int *type)
{
	size_t i = from;
	int prev_bare = 0;

	while (i < len) {
		const unsigned char *lf = memchr(s + i, '\n', len - i);
		const unsigned char *l = s + i;
		size_t j, m, k, os;
		int legacy, normalize, exim, strict, smtpd;

		if (!lf)
			break;
		j = (size_t)(lf - s);
		m = j - i;
		for (k = m; k > 0 && l[k - 1] == '\r'; k--)
			;
		legacy = k == 1 && l[0] == '.';
		normalize = !prev_bare && m == 2 && l[0] == '.' && l[1] == '\r';
		exim = (m == 1 && l[0] == '.') || normalize ||
		       (m == 2 && l[0] == '.' && l[1] == '\r');
		strict = normalize;
		os = m - (m && l[m - 1] == '\r');
		smtpd = os >= 1 && l[0] == '.' && (os == 1 || l[1] == 0);
		if (legacy && normalize && exim && strict && smtpd) {
			*type = TG_CMD_BODY_END;
			return j;
		}
		if (legacy || normalize || exim || strict || smtpd) {
			*type = TG_CMD_BODY_AMBIGUOUS;
			return j;
		}
		prev_bare = !(m && l[m - 1] == '\r');
		i = j + 1;
	}
	return len;
}

/*
 * Does a raw command line (without its LF) hold a control byte other than
 * tab, or a CR that is not the last byte, before the end of its verb and
 * while it may still be WORD (only white space so far, or a verb that is a
 * prefix of WORD; with nonempty, a verb of at least one byte)?
 */
static int ref_odd_word(const unsigned char *l, size_t n, const char *word,
			int nonempty)
{
	size_t i, vlen = 0;
	int phase = 0;		/* 0: white space, 1: verb, 2: after it */
	int prefix = 1;		/* the verb so far is a prefix of WORD */

	for (i = 0; i < n && phase < 2; i++) {
		unsigned char c = l[i];
		int ctl = (c < ' ' && c != '\t' && c != '\r') ||
			  (c == '\r' && i + 1 < n);

		if (ctl && prefix && (!nonempty || vlen > 0))
			return 1;
		if (c == '\r')
			continue;
		if (phase == 0 && !ref_space(c))
			phase = 1;
		else if (phase == 1 && ref_space(c))
			phase = 2;
		if (phase == 1) {
			if (c >= 'a' && c <= 'z')
				c = c - 'a' + 'A';
			prefix = prefix && vlen < 4 && c == (unsigned char)word[vlen];
			vlen++;
		}
	}
	return 0;
}

/*
 * For MAIL: servers read such bytes as white space (Postfix smtpd), as the
 * end of the line (NUL) or not at all, so a parser may keep the line as the
 * verb it reads or refuse it as TG_CMD_MAIL_BAD.
 */
static int ref_odd(const unsigned char *l, size_t n)
{
	return ref_odd_word(l, n, "MAIL", 0);
}

/*
 * As ref_odd(), for a verb that is a prefix of BDAT (and not empty): a
 * server that reads the control byte as white space ("BDAT\v12") frames
 * a chunk, one that does not reads commands. The parser must give
 * TG_CMD_CHUNK_BAD.
 */
static int ref_odd_bdat(const unsigned char *l, size_t n)
{
	return ref_odd_word(l, n, "BDAT", 1);
}

static int body_after(const struct ctl *c, size_t line_ev, __u64 verb)
{
	if (line_ev < 16 && (c->body_mask >> line_ev & 1))
		return 1;
	return !(c->flags & FL_NO354) && verb == TG_VERB_DATA;
}

static void ev_push(struct evlist *l, int type, __u64 verb, __u64 ak,
		    __u64 dk, size_t at)
{
	struct ev *e = &l->v[l->n++];

	e->type = type;
	e->verb = verb;
	e->addr_key = ak;
	e->domain_key = dk;
	e->at = at;
}

/*
 * The events the framing reference expects (MAIL lines: EV_MAILISH). For
 * an odd line (ref_odd()) either reading is right; the reference goes on
 * with the one the parser took (got), so that what follows is compared.
 */
static void ref_events(const unsigned char *s, size_t len,
		       const struct ctl *c, const struct evlist *got,
		       struct evlist *out)
{
	static unsigned char line[MAX_IN];
	size_t i = 0, line_ev = 0;
	int mode = TG_MODE_CMD, tx = 0, last = 0;
	__u64 chunk = 0;

	out->n = 0;
	while (i < len) {
		if (mode == TG_MODE_CMD) {
			const unsigned char *lf = memchr(s + i, '\n', len - i);
			size_t j, n, rest;
			__u64 verb, size;
			int odd, canon;

			if (!lf)
				break;
			j = (size_t)(lf - s);
			n = ref_strip_cr(s + i, j - i, line);
			verb = ref_verb(line, n, &rest);
			odd = ref_odd(s + i, j - i);
			if (verb == TG_VERB_MAIL) {
				ev_push(out, EV_MAILISH, verb, 0, 0, j);
				tx = 1;
			} else if (odd && (out->n >= got->n ||
					   got->v[out->n].type == TG_CMD_MAIL_BAD)) {
				ev_push(out, EV_LINE_OR_BAD, verb, 0, 0, j);
				tx = 1;
			} else if (!odd && ref_odd_bdat(s + i, j - i)) {
				ev_push(out, TG_CMD_CHUNK_BAD, verb, 0, 0, j);
			} else if (!odd && verb == TG_VERB_BDAT) {
				canon = ref_bdat(s + i, j - i, &size, &last);
				if (!canon || !tx || size > TG_CHUNK_MAX ||
				    (c->flags & FL_NO_CHUNKING)) {
					ev_push(out, TG_CMD_CHUNK_BAD, verb, 0, 0, j);
				} else {
					ev_push(out, TG_CMD_LINE, verb, 0, 0, j);
					if (body_after(c, line_ev, verb)) {
						mode = TG_MODE_BODY;
					} else if (size) {
						mode = TG_MODE_CHUNK;
						chunk = size;
					} else if (last) {
						tx = 0;
					}
					line_ev++;
				}
			} else {
				/* a line, or an odd one the parser kept as one */
				ev_push(out, odd ? EV_LINE_OR_BAD : TG_CMD_LINE,
					verb, 0, 0, j);
				if (verb == TG_VERB_RSET || verb == TG_VERB_EHLO ||
				    verb == TG_VERB_HELO || verb == TG_VERB_QUIT)
					tx = 0;
				if (body_after(c, line_ev, verb))
					mode = TG_MODE_BODY;
				line_ev++;
			}
			i = j + 1;
		} else if (mode == TG_MODE_CHUNK) {
			if (chunk > len - i)
				break;
			i += chunk;
			ev_push(out, TG_CMD_CHUNK_END, 0, 0, 0, i - 1);
			mode = TG_MODE_CMD;
			if (last)
				tx = 0;
		} else {
			int type;
			size_t j = ref_body_end(s, i, len, &type);

			if (j == len)
				break;
			ev_push(out, type, 0, 0, 0, j);
			i = j + 1;
			mode = TG_MODE_CMD;
			tx = 0;
		}
	}
}

/* ------------------------------------------------------------------ */
/* Server model: how Postfix smtpd 3.7 reads a command line             */

#define PF_LINE_LIMIT	2048	/* line_length_limit; the rest is skipped */

enum { PF_OTHER, PF_MAIL, PF_MAIL_NULL, PF_UNSURE };

struct pf_tok {
	size_t n;
	int error;		/* a quote or bracket left open */
	int quoted_whole;	/* "<...>" and nothing else */
	char s[PF_LINE_LIMIT + 8];
};

static int pf_space(unsigned char c)
{
	/* ISSPACE() in the C locale */
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' ||
	       c == '\r';
}

/* smtpd_token.c smtp_quoted(): up to the matching close, nesting. */
static size_t pf_quoted(const unsigned char *cp, size_t i, size_t n,
			struct pf_tok *t, char start, char last)
{
	char stack[PF_LINE_LIMIT + 2];
	size_t depth = 0;
	char wanted;

	stack[depth++] = wanted = last;
	t->s[t->n++] = start;
	while (i < n) {
		char c = (char)cp[i++];

		t->s[t->n++] = c;
		if (c == '\\') {
			if (i >= n)
				break;
			t->s[t->n++] = (char)cp[i++];
		} else if (c == wanted) {
			if (depth == 1)
				return i;
			depth--;
			wanted = stack[depth - 1];
		} else if (c == '"') {
			stack[depth++] = wanted = '"';
		} else if (c == '<' && wanted == '>') {
			stack[depth++] = wanted = '>';
		}
	}
	t->error = 1;
	return i;
}

static int pf_prefix_ci(const struct pf_tok *t, const char *word)
{
	size_t i;

	if (t->n > strlen(word))
		return 0;
	for (i = 0; i < t->n; i++)
		if (lower((unsigned char)t->s[i]) != (unsigned char)word[i])
			return 0;
	return 1;
}

/* smtpd_token.c smtp_next_token(); returns 0 when no token is left. */
static int pf_next(const unsigned char *cp, size_t *ip, size_t n,
		   struct pf_tok *t)
{
	size_t i = *ip, pieces = 0;

	t->n = 0;
	t->error = 0;
	t->quoted_whole = 0;
	while (i < n) {
		unsigned char c = cp[i++];

		if (pf_space(c)) {
			while (i < n && pf_space(cp[i]))
				i++;
			if (t->n > 0)
				break;
		} else if (c == '<') {
			t->quoted_whole = pieces == 0 && t->n == 0;
			i = pf_quoted(cp, i, n, t, '<', '>');
			pieces++;
		} else if (c == '"') {
			i = pf_quoted(cp, i, n, t, '"', '"');
			pieces += 2;
		} else if (c == ':') {
			t->s[t->n++] = (char)c;
			pieces += 2;
			if (pf_prefix_ci(t, "to:") || pf_prefix_ci(t, "from:"))
				break;
		} else {
			if (c == '\\') {
				t->s[t->n++] = (char)c;
				if (i >= n)
					break;
				c = cp[i++];
			}
			t->s[t->n++] = (char)c;
			pieces += 2;
		}
	}
	if (pieces != 1)
		t->quoted_whole = 0;
	*ip = i;
	return t->n > 0;
}

static int pf_eq_ci(const struct pf_tok *t, const char *word)
{
	return t->n == strlen(word) && pf_prefix_ci(t, word);
}

/* Does token t start with word (lower case), ignoring case? */
static int pf_starts_ci(const struct pf_tok *t, const char *word)
{
	size_t i, n = strlen(word);

	if (t->n < n)
		return 0;
	for (i = 0; i < n; i++)
		if (lower((unsigned char)t->s[i]) != (unsigned char)word[i])
			return 0;
	return 1;
}

/* ESMTP parameters smtpd takes without complaint. */
static int pf_param_ok(const struct pf_tok *t)
{
	size_t i;

	if (pf_eq_ci(t, "body=8bitmime") || pf_eq_ci(t, "body=7bit") ||
	    pf_eq_ci(t, "smtputf8"))
		return 1;
	if (t->n < 6 || !pf_starts_ci(t, "size="))
		return 0;
	for (i = 5; i < t->n; i++)
		if (t->s[i] < '0' || t->s[i] > '9')
			return 0;
	return 1;
}

/* An address the model reads for sure: [A-Za-z0-9._+-] dot-atoms. */
static int plain_atom(const char *s, size_t n, int plus)
{
	size_t i;

	if (n == 0 || s[0] == '.' || s[n - 1] == '.')
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.' && i + 1 < n && s[i + 1] == '.')
			return 0;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '-' ||
		      c == '_' || (plus && c == '+')))
			return 0;
	}
	return 1;
}

/*
 * Reads a command line (without its LF) as smtpd does. PF_MAIL: MAIL FROM
 * a non-null address that smtpd accepts; *addr, *alen: the address when
 * it is plain, else *alen = 0. PF_UNSURE: 8-bit bytes (smtpd checks
 * UTF-8 first), or an address form this model does not vouch for.
 */
static int pf_mail(const unsigned char *line, size_t len, const char **addr,
		   size_t *alen)
{
	static struct pf_tok tok[3], extra;
	const unsigned char *nul;
	size_t i = 0, k, inner;
	int argc = 0;
	const char *a;

	*alen = 0;
	if (len > PF_LINE_LIMIT)
		len = PF_LINE_LIMIT;
	else if (len && line[len - 1] == '\r')
		len--;		/* smtp_get() strips CR LF */
	nul = memchr(line, 0, len);
	if (nul)
		len = (size_t)(nul - line);	/* a C string from here */
	for (k = 0; k < len; k++)
		if (line[k] >= 0x80)
			return PF_UNSURE;
	while (argc < 3 && pf_next(line, &i, len, &tok[argc]))
		argc++;
	if (argc < 3 || !pf_eq_ci(&tok[0], "mail") ||
	    !pf_eq_ci(&tok[1], "from:"))
		return PF_OTHER;
	while (pf_next(line, &i, len, &extra))
		if (!pf_param_ok(&extra))
			return PF_OTHER;	/* 555 Unsupported option */
	if (tok[2].error)
		return PF_OTHER;		/* 501 Bad address syntax */
	a = tok[2].s;
	inner = tok[2].n;
	if (tok[2].quoted_whole) {
		a++;
		inner -= 2;
		if (inner == 0)
			return PF_MAIL_NULL;
	}
	/* Forms this model reads for sure: no quotes, comments, escapes. */
	for (k = 0; k < inner; k++)
		if (strchr("<>\"()\\[]", a[k]) || pf_space((unsigned char)a[k]))
			return PF_UNSURE;
	{
		const char *at = memchr(a, '@', inner);

		if (at && plain_atom(a, (size_t)(at - a), 1) &&
		    plain_atom(at + 1, inner - (size_t)(at - a) - 1, 0)) {
			*addr = a;
			*alen = inner;
		}
	}
	return PF_MAIL;
}

/* ------------------------------------------------------------------ */
/* Driving the parser                                                  */

struct checks {
	const struct ctl *c;
	const unsigned char *s;
	size_t len;
};

static void check_sender_bytes(const unsigned char *line, size_t n,
			       const struct tg_cmd *p)
{
	size_t off = p->addr_start, k;
	__u64 key, dk;

	if (p->aflags & TG_AF_ROUTED)
		return;		/* the copied bytes hold the route */
	FUZZ_CHECK(off + p->addr_len <= n,
		   "line \"%s\": MAIL address at %zu, %u bytes, past the "
		   "line (%zu bytes)", fz_esc(line, n), off,
		   (unsigned)p->addr_len, n);
	for (k = off; k < off + p->addr_len; k++)
		if (line[k] == '\r')
			return;	/* the parser skipped it */
	key = tg_addr_key((const char *)line + off, p->addr_len, &dk);
	FUZZ_CHECK(key == p->addr_key && dk == p->domain_key,
		   "line \"%s\": MAIL key %#llx/%#llx, but its sender bytes "
		   "\"%s\" give tg_addr_key() %#llx/%#llx",
		   fz_esc(line, n), (unsigned long long)p->addr_key,
		   (unsigned long long)p->domain_key,
		   fz_esc(line + off, p->addr_len), (unsigned long long)key,
		   (unsigned long long)dk);
}

/* Checks on one command line that ended (at its LF) with event ev. */
static void check_line(const unsigned char *line, size_t n, int ev,
		       const struct tg_cmd *p, int all_held)
{
	size_t eff = n - (n && line[n - 1] == '\r');
	const char *addr = NULL;
	size_t alen;
	int pf;

	if (is_mailish(ev))
		FUZZ_CHECK(all_held,
			   "line \"%s\" is %s, but tg_cmd_holding() was 0 "
			   "after a proper prefix of it: those bytes would "
			   "have left before the line was judged",
			   fz_esc(line, n), ev_name(ev));
	FUZZ_CHECK(ev != TG_CMD_MAIL ||
			   (size_t)p->addr_start + p->addr_len <= TG_LINE_MAX,
		   "line of %zu bytes: %s whose address (at %u, %u bytes) "
		   "ends past TG_LINE_MAX %d: \"%s\"", eff, ev_name(ev),
		   (unsigned)p->addr_start, (unsigned)p->addr_len,
		   TG_LINE_MAX, fz_esc(line, n));
	if (ev == TG_CMD_MAIL)
		check_sender_bytes(line, n, p);

	pf = pf_mail(line, n, &addr, &alen);
	if (pf != PF_MAIL)
		return;
	FUZZ_CHECK(ev == TG_CMD_MAIL || ev == TG_CMD_MAIL_BAD,
		   "line \"%s\": Postfix smtpd reads MAIL FROM:<%s>, the "
		   "parser gives %s (verb %#llx): the sender passes unheld",
		   fz_esc(line, n), alen ? fz_esc(addr, alen) : "...",
		   ev_name(ev), (unsigned long long)p->verb);
	if (ev == TG_CMD_MAIL && alen) {
		const char *at = memchr(addr, '@', alen);
		__u64 dk, key = ref_key(addr, (size_t)(at - addr), at + 1,
					alen - (size_t)(at - addr) - 1, 1, &dk);

		FUZZ_CHECK(p->addr_key == key && p->domain_key == dk,
			   "line \"%s\": Postfix smtpd reads MAIL "
			   "FROM:<%s>, the parser's key %#llx/%#llx is not "
			   "its key %#llx/%#llx",
			   fz_esc(line, n), fz_esc(addr, alen),
			   (unsigned long long)p->addr_key,
			   (unsigned long long)p->domain_key,
			   (unsigned long long)key, (unsigned long long)dk);
	}
}

/*
 * Feeds s[0..len) in the pieces between cuts, the state moving to a new
 * block at each cut. With chk, runs the per-byte and per-line checks.
 */
static void run(const unsigned char *s, size_t len, const size_t *cuts,
		size_t ncuts, const struct ctl *c, struct evlist *out, int chk)
{
	struct tg_cmd *p = malloc(sizeof(*p));
	size_t i, k = 0, line_ev = 0, line_start = 0, line_bytes = 0;
	int all_held = 1;

	if (!p)
		abort();
	tg_cmd_init(p);
	p->no_chunking = (c->flags & (FL_GRAMMAR | FL_NO_CHUNKING)) ==
			 FL_NO_CHUNKING;
	out->n = 0;
	for (i = 0; i < len; i++) {
		int mode = p->mode, ev;

		if (k < ncuts && cuts[k] == i) {
			p = fz_move_state(p, sizeof(*p));
			k++;
		}
		if (mode == TG_MODE_CMD && line_bytes == 0)
			line_start = i;
		ev = tg_cmd_feed(p, s[i]);
		if (chk && mode == TG_MODE_CMD) {
			if (ev == TG_CMD_NONE) {
				FUZZ_CHECK(s[i] != '\n',
					   "no event at the LF at %zu", i);
				line_bytes++;
				if (!tg_cmd_holding(p))
					all_held = 0;
			} else {
				FUZZ_CHECK(s[i] == '\n' &&
						   (ev == TG_CMD_LINE ||
						    ev == TG_CMD_CHUNK_BAD ||
						    is_mailish(ev)),
					   "%s at %zu (byte %#x) in command "
					   "mode", ev_name(ev), i, s[i]);
				check_line(s + line_start, line_bytes, ev, p,
					   all_held);
			}
		} else if (chk) {
			FUZZ_CHECK(ev == TG_CMD_NONE ||
					   (mode == TG_MODE_BODY ?
						    ev == TG_CMD_BODY_END ||
							    ev == TG_CMD_BODY_AMBIGUOUS :
						    ev == TG_CMD_CHUNK_END),
				   "%s at %zu in %s mode", ev_name(ev), i,
				   mode == TG_MODE_BODY ? "body" : "chunk");
		}
		if (ev == TG_CMD_NONE)
			continue;
		line_bytes = 0;
		all_held = 1;
		ev_push(out, ev, p->verb, p->addr_key, p->domain_key, i);
		if (ev == TG_CMD_LINE && body_after(c, line_ev++, p->verb))
			tg_cmd_start_body(p);
	}
	free(p);
}

static void ev_diff(const char *what, const unsigned char *s, size_t len,
		    const struct evlist *a, const struct evlist *b)
{
	size_t i;

	for (i = 0; i < a->n && i < b->n; i++) {
		const struct ev *x = &a->v[i], *y = &b->v[i];

		if (x->type != y->type || x->verb != y->verb ||
		    x->addr_key != y->addr_key ||
		    x->domain_key != y->domain_key || x->at != y->at)
			FUZZ_FAIL("input \"%s\": %s: event %zu is %s at %zu "
				  "(verb %#llx keys %#llx/%#llx), in one piece "
				  "%s at %zu (verb %#llx keys %#llx/%#llx)",
				  fz_esc(s, len), what, i, ev_name(y->type),
				  y->at, (unsigned long long)y->verb,
				  (unsigned long long)y->addr_key,
				  (unsigned long long)y->domain_key,
				  ev_name(x->type), x->at,
				  (unsigned long long)x->verb,
				  (unsigned long long)x->addr_key,
				  (unsigned long long)x->domain_key);
	}
	FUZZ_CHECK(a->n == b->n,
		   "input \"%s\": %s: %zu events, in one piece %zu",
		   fz_esc(s, len), what, b->n, a->n);
}

static void check_framing(const unsigned char *s, size_t len,
			  const struct evlist *got, const struct evlist *want)
{
	size_t i;

	for (i = 0; i < got->n && i < want->n; i++) {
		const struct ev *g = &got->v[i], *w = &want->v[i];
		int same;

		if (w->type == EV_MAILISH)
			same = is_mailish(g->type);
		else if (w->type == EV_LINE_OR_BAD)
			same = g->type == TG_CMD_MAIL_BAD ||
			       (g->type == TG_CMD_LINE && g->verb == w->verb);
		else
			same = g->type == w->type;
		if (same && w->type != EV_MAILISH && g->type == TG_CMD_LINE)
			same = g->verb == w->verb;
		if (!same || g->at != w->at)
			FUZZ_FAIL("input \"%s\": event %zu is %s (verb %#llx) "
				  "at %zu, the reference expects %s (verb "
				  "%#llx) at %zu",
				  fz_esc(s, len), i, ev_name(g->type),
				  (unsigned long long)g->verb, g->at,
				  ev_name(w->type),
				  (unsigned long long)w->verb, w->at);
	}
	FUZZ_CHECK(got->n == want->n,
		   "input \"%s\": %zu events, the reference expects %zu "
		   "(next: %s at %zu)",
		   fz_esc(s, len), got->n, want->n,
		   got->n > want->n ? ev_name(got->v[want->n].type) :
				      ev_name(want->v[got->n].type),
		   got->n > want->n ? got->v[want->n].at : want->v[got->n].at);
}

/* ------------------------------------------------------------------ */
/* Grammar mode: one MAIL line and its expected event                   */

struct src {
	const unsigned char *p;
	size_t n, i;
};

static unsigned g8(struct src *g)
{
	return g->i < g->n ? g->p[g->i++] : 0;
}

struct expect {
	int any_bad;		/* TG_CMD_MAIL_BAD is also right */
	int type;		/* TG_CMD_MAIL or TG_CMD_MAIL_BAD */
	__u64 key, dkey;
	const char *why;
};

static void put(char *o, size_t *n, const char *str)
{
	size_t k = strlen(str);

	memcpy(o + *n, str, k);
	*n += k;
}

#define PUT(str) put(o, &n, (str))

static void put_case(char *o, size_t *n, const char *word, unsigned bits)
{
	size_t i;

	for (i = 0; word[i]; i++)
		o[(*n)++] = (bits >> i & 1) ? word[i] - 'A' + 'a' : word[i];
}

static size_t gen_chars(struct src *g, char *o, size_t len, const char *alpha)
{
	size_t i, na = strlen(alpha);

	for (i = 0; i < len; i++)
		o[i] = alpha[g8(g) % na];
	return len;
}

/* Makes s a dot-atom: no leading, trailing or doubled dot. */
static void dot_atom(char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (s[i] == '.' && (i == 0 || i == n - 1 || s[i - 1] == '.'))
			s[i] = 'x';
}

static size_t gen_mail(struct src *g, int equiv, char *o, struct expect *x)
{
	static const char lalpha[] = "abcdefghijklmnopqrstuvwxyz"
				     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-+_";
	static const char dalpha[] = "abcdefghijklmnopqrstuvwxyz"
				     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-";
	static const char *const ws_lead[] = { "", " ", "\t", "  \t" };
	static const char *const ws_verb[] = { " ", "\t", " \t " };
	static const char *const ws_odd[] = { "\v", "\f", "\r" };
	static const char *const ws_after[] = { "", " ", "\t" };
	static char local[2560], dom[512];
	size_t n = 0, llen, dlen, i, line_len, addr_len, addr_end;
	unsigned u, deco = equiv ? g8(g) % 7 : 7;
	int bracket, has_dom;

	u = g8(g);
	if (deco == 1)
		PUT((u & 1) ? "\f" : "\v");
	else
		PUT(ws_lead[u % 4]);
	put_case(o, &n, "MAIL", g8(g));
	u = g8(g);
	if (deco == 0)
		PUT(ws_odd[u % 3]);
	else
		PUT(ws_verb[u % 3]);
	put_case(o, &n, "FROM", g8(g));
	if (deco == 7 && g8(g) % 4 == 0)
		PUT(" ");	/* servers differ; the parser takes it */
	PUT(":");
	PUT(ws_after[g8(g) % 3]);

	bracket = deco >= 2 && deco <= 6 ? 1 : g8(g) % 5 != 0;
	if (bracket)
		PUT("<");
	if (bracket && deco == 7 && g8(g) % 6 == 0) {
		PUT("@");
		n += gen_chars(g, o + n, 1 + g8(g) % 6, dalpha);
		if (g8(g) & 1) {
			PUT(",@");
			n += gen_chars(g, o + n, 1 + g8(g) % 6, dalpha);
		}
		PUT(":");
	}
	u = g8(g);
	llen = u >= 0xfe && deco == 7 ? 1950 + g8(g) % 200 :
	       u >= 0xf0 && deco == 7 ? 200 + g8(g) % 100 : 1 + u % 20;
	gen_chars(g, local, llen, lalpha);
	has_dom = deco != 7 || g8(g) % 10 != 0;
	u = g8(g);
	dlen = u >= 0xf8 && deco == 7 ? 200 + g8(g) % 100 : 1 + u % 20;
	gen_chars(g, dom, dlen, dalpha);
	if (deco != 7) {
		dot_atom(local, llen);
		dot_atom(dom, dlen);
	}
	x->key = ref_key(local, llen, dom, dlen, has_dom, &x->dkey);

	switch (deco) {
	case 2:		/* "local"@domain */
		PUT("\"");
		memcpy(o + n, local, llen);
		n += llen;
		PUT("\"");
		break;
	case 5:		/* al\ice@domain: a backslash before a letter */
		for (i = g8(g) % llen; i < llen; i++)
			if ((local[i] | 0x20) >= 'a' && (local[i] | 0x20) <= 'z')
				break;
		memcpy(o + n, local, i);
		n += i;
		if (i < llen)
			PUT("\\");
		memcpy(o + n, local + i, llen - i);
		n += llen - i;
		break;
	default:
		memcpy(o + n, local, llen);
		n += llen;
	}
	if (deco == 3)
		PUT("(c)");
	if (has_dom) {
		PUT("@");
		memcpy(o + n, dom, dlen);
		n += dlen;
	}
	if (deco == 4)
		PUT("(c)");
	if (deco == 6)
		PUT(";");
	if (bracket)
		PUT(">");
	/* where the address ends: its '>', or the blank after a bare one */
	addr_end = n;
	for (u = g8(g) % 3; u > 0; u--) {
		switch (g8(g) % 4) {
		case 0:
			n += (size_t)sprintf(o + n, " SIZE=%u", g8(g) * 1000);
			break;
		case 1:
			PUT(" BODY=8BITMIME");
			break;
		case 2:
			PUT(" SMTPUTF8");
			break;
		default:
			PUT(" X-PAD=");
			i = (size_t)g8(g) * 4;
			memset(o + n, 'x', i);
			n += i;
		}
	}
	line_len = n;
	if (!bracket && line_len > addr_end)
		addr_end++;
	PUT((g8(g) & 1) ? "\r\n" : "\n");

	/* What the parser must give. */
	addr_len = llen + (has_dom ? 1 + dlen : 0);
	x->any_bad = deco != 7;
	x->type = TG_CMD_MAIL;
	x->why = "a plain MAIL line";
	if (addr_end > TG_LINE_MAX) {
		x->type = TG_CMD_MAIL_BAD;
		x->why = "an address that ends past TG_LINE_MAX";
	} else if (addr_len > TG_ADDR_MAX) {
		x->type = TG_CMD_MAIL_BAD;
		x->why = "an address longer than TG_ADDR_MAX";
	} else if (deco != 7) {
		x->why = (const char *[]){
			"verb and FROM separated by \\v, \\f or a bare CR "
			"(Postfix smtpd: MAIL FROM)",
			"\\f or \\v before the verb (Postfix smtpd: MAIL FROM)",
			"a quoted local part (Postfix smtpd: the address "
			"unquoted)",
			"a comment after the local part (Postfix smtpd: "
			"comment dropped)",
			"a comment after the domain (Postfix smtpd: comment "
			"dropped)",
			"a backslash before a letter (Postfix smtpd: "
			"backslash dropped)",
			"';' before '>' (Postfix smtpd: dropped)",
		}[deco];
	}
	return n;
}

static void run_grammar(const unsigned char *payload, size_t plen,
			const struct ctl *c, struct evlist *one,
			struct evlist *split)
{
	static char line[8192];
	static size_t cuts[sizeof(line)];
	struct src g = { payload, plen, 0 };
	struct expect x;
	const struct ev *e;
	size_t n, nc;
	int ok;

	n = gen_mail(&g, c->flags & FL_EQUIV, line, &x);
	run((unsigned char *)line, n, NULL, 0, c, one, 1);
	nc = fz_cuts((unsigned char *)line, n, c->seed, 1, cuts,
		     FZ_NELEM(cuts));
	run((unsigned char *)line, n, cuts, nc, c, split, 0);
	ev_diff("cut in pieces", (unsigned char *)line, n, one, split);

	FUZZ_CHECK(one->n == 1, "line \"%s\": %zu events, expected 1",
		   fz_esc(line, n), one->n);
	e = &one->v[0];
	if (x.type == TG_CMD_MAIL_BAD || (x.any_bad && e->type == TG_CMD_MAIL_BAD))
		ok = e->type == TG_CMD_MAIL_BAD;
	else
		ok = e->type == TG_CMD_MAIL && e->addr_key == x.key &&
		     e->domain_key == x.dkey;
	if (!ok)
		FUZZ_FAIL("line \"%s\" (%s): the parser gives %s keys "
			  "%#llx/%#llx, expected %s%s keys %#llx/%#llx",
			  fz_esc(line, n), x.why, ev_name(e->type),
			  (unsigned long long)e->addr_key,
			  (unsigned long long)e->domain_key,
			  x.any_bad ? "MAIL_BAD or " : "", ev_name(x.type),
			  (unsigned long long)x.key,
			  (unsigned long long)x.dkey);
}

/* ------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ev v1[MAX_IN + 1], v2[MAX_IN + 1], v3[MAX_IN + 1];
	static size_t cuts[MAX_CUTS];
	struct evlist one = { 0, v1 }, split = { 0, v2 }, ref = { 0, v3 };
	struct ctl c = { 0, 0, 0 };
	const unsigned char *s = data;
	size_t len = size, nc;
	int many;

	if (size > 0 && data[0] < 0x08) {
		if (size < 4)
			return 0;
		c.flags = data[0];
		c.body_mask = (__u16)(data[1] | data[2] << 8);
		c.seed = data[3];
		s = data + 4;
		len = size - 4;
	}
	if (len > MAX_IN)
		len = MAX_IN;

	if (c.flags & FL_GRAMMAR) {
		run_grammar(s, len, &c, &one, &split);
		return 0;
	}

	run(s, len, NULL, 0, &c, &one, 1);
	ref_events(s, len, &c, &one, &ref);
	check_framing(s, len, &one, &ref);
	for (many = 0; many < 2; many++) {
		nc = fz_cuts(s, len, c.seed, many, cuts, FZ_NELEM(cuts));
		run(s, len, cuts, nc, &c, &split, 0);
		ev_diff(many ? "cut in many pieces" : "cut in two", s, len,
			&one, &split);
	}
	return 0;
}
