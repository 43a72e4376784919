/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_smtp - incremental SMTP command and reply parsers, one source
 *	for the BPF programs, the agent and the native tests
 * SYNOPSIS
 *	#include "tg_smtp.h"
 *
 *	void	tg_cmd_init(struct tg_cmd *p);
 *	int	tg_cmd_feed(struct tg_cmd *p, unsigned char c);
 *	int	tg_cmd_holding(const struct tg_cmd *p);
 *	void	tg_cmd_start_body(struct tg_cmd *p);
 *
 *	void	tg_reply_init(struct tg_reply *r);
 *	int	tg_reply_feed(struct tg_reply *r, unsigned char c);
 *
 *	__u64	tg_addr_key(const char *addr, __u32 len, __u64 *domain_key);
 *	__u64	tg_addr_key_srs(const char *addr, __u32 len, __u64 *domain_key,
 *				int *srs);
 *	int	tg_cmd_srs(const struct tg_cmd *p);
 *
 *	int	tg_path(const char *line, __u32 len, struct tg_cmd *p,
 *			__u32 *start, __u32 *n);
 * DESCRIPTION
 *	Both parsers consume one byte at a time and keep all of their state
 *	in a small fixed-size structure, so that the verdict never depends
 *	on how the stream was split into writes or segments, and so that a
 *	BPF program can keep the state in a map between invocations.
 *	There are no pointers, no recursion and no unbounded loops: every
 *	function here is safe on hostile bytes by construction.
 *
 *	tg_cmd_feed() parses what an SMTP client writes. It returns
 *	TG_CMD_NONE while a line is in progress and one event when a line
 *	(or a DATA body, or a BDAT chunk) ends:
 * .IP TG_CMD_LINE
 *	a command line other than MAIL; its verb is in p->verb (TG_VERB_*).
 * .IP TG_CMD_MAIL
 *	MAIL FROM with a non-null reverse-path; p->addr_key and
 *	p->domain_key identify the normalized sender (see tg_addr_key()),
 *	and tg_cmd_srs() says whether it is an SRS-rewritten one.
 * .IP TG_CMD_MAIL_NULL
 *	MAIL FROM:<> (bounces and auto-replies).
 * .IP TG_CMD_MAIL_BAD
 *	a MAIL command this parser cannot vouch for: bad syntax, an address
 *	longer than TG_ADDR_MAX, or a line longer than TG_LINE_MAX. Callers
 *	must treat it as a possibly guaranteed sender (fail closed).
 * .IP TG_CMD_BODY_END
 *	the end of a DATA body. The body starts only when the caller says so
 *	with tg_cmd_start_body(), after the server accepted DATA (354).
 * .IP TG_CMD_CHUNK_END
 *	the end of a BDAT chunk; BDAT sizes are framed by the parser itself.
 * .PP
 *	A line ends at LF; a CR before it is ignored. The verb may be preceded
 *	by white space and is matched without regard to case, as servers do.
 *	The MAIL argument is parsed as servers accept it: "FROM" in any case,
 *	optional white space around the colon, a bracketed or bare address,
 *	then ESMTP parameters, which are skipped.
 *
 *	tg_cmd_holding() says whether the line in progress may still turn out
 *	to be a MAIL command: its bytes must not leave before the line ends.
 *
 *	The end of a DATA body is recognized on a line that holds a single
 *	dot, where a line may start after LF or after a bare CR. Servers differ
 *	in the line endings they accept; seeing an end too early is safe (the
 *	rest is parsed as commands), seeing it too late would let commands
 *	pass as body text.
 *
 *	tg_reply_feed() parses what an SMTP server writes. It returns
 *	TG_REPLY_FINAL at the end of the last line of a reply (r->code holds
 *	the code), TG_REPLY_CONT at the end of a continuation line ("250-"),
 *	TG_REPLY_BAD at the end of a line that does not start with three
 *	digits, and TG_REPLY_NONE otherwise. r->starttls (r->chunking) is set
 *	when a line of the reply in progress advertises STARTTLS (CHUNKING);
 *	both are cleared when the next reply starts.
 *
 *	p->no_chunking, set by the caller when the host's EHLO reply did not
 *	offer CHUNKING, makes BDAT an ordinary command line: such a host
 *	refuses it and reads what follows as commands, so must the parser.
 *
 *	tg_addr_key() computes the policy key of an address written as in a
 *	senders file: the same normalization as the MAIL parser (ASCII case
 *	folded, a "+extension" dropped from the local part, a source route
 *	dropped, the quoting of a quoted local part dropped) and the same 64-bit FNV-1a hash. *domain_key receives the key
 *	of "@domain" (0 when there is no domain). It returns 0 when the address
 *	is malformed. tg_addr_key_srs() also gives tg_cmd_srs()'s answer.
 *
 *	tg_path() runs the same parser over one whole MAIL or RCPT line for
 *	user space (tlsguardd's replies and audit trail), RCPT's
 *	forward-path read by the rules of MAIL's reverse-path
 *	(p->rcpt_paths, which the kernel never sets), and says where the
 *	address stands in the line.
 * DIAGNOSTICS
 *	None; malformed input is reported through the events above.
 * BUGS
 *	Case folding is ASCII only: an SMTPUTF8 address matches its senders
 *	file entry byte for byte outside of ASCII letters.
 */
#ifndef TG_SMTP_H
#define TG_SMTP_H

#include "tg_types.h"

#define TG_LINE_MAX	1024	/* longest MAIL line we vouch for */
#define TG_ADDR_MAX	256	/* longest reverse-path (RFC 5321: 256) */

#define TG_FNV_OFFSET	0xcbf29ce484222325ULL
#define TG_FNV_PRIME	0x100000001b3ULL

/* Verbs are packed upper-case, first character in the lowest byte. */
#define TG_V2(a, b)		((__u64)(a) | (__u64)(b) << 8)
#define TG_V4(a, b, c, d)	(TG_V2(a, b) | (__u64)(c) << 16 | (__u64)(d) << 24)
#define TG_V8(a, b, c, d, e, f, g, h) \
	(TG_V4(a, b, c, d) | (__u64)TG_V4(e, f, g, h) << 32)

#define TG_VERB_MAIL	TG_V4('M', 'A', 'I', 'L')
#define TG_VERB_RCPT	TG_V4('R', 'C', 'P', 'T')
#define TG_VERB_DATA	TG_V4('D', 'A', 'T', 'A')
#define TG_VERB_BDAT	TG_V4('B', 'D', 'A', 'T')
#define TG_VERB_RSET	TG_V4('R', 'S', 'E', 'T')
#define TG_VERB_QUIT	TG_V4('Q', 'U', 'I', 'T')
#define TG_VERB_NOOP	TG_V4('N', 'O', 'O', 'P')
#define TG_VERB_EHLO	TG_V4('E', 'H', 'L', 'O')
#define TG_VERB_HELO	TG_V4('H', 'E', 'L', 'O')
#define TG_VERB_STARTTLS TG_V8('S', 'T', 'A', 'R', 'T', 'T', 'L', 'S')
#define TG_WORD_CHUNKING TG_V8('C', 'H', 'U', 'N', 'K', 'I', 'N', 'G')
#define TG_VERB_LONG	(~0ULL)	/* more than eight characters */

enum tg_cmd_event {
	TG_CMD_NONE,
	TG_CMD_LINE,
	TG_CMD_MAIL,
	TG_CMD_MAIL_NULL,
	TG_CMD_MAIL_BAD,
	TG_CMD_BODY_END,
	TG_CMD_CHUNK_END,
};

enum tg_cmd_mode {
	TG_MODE_CMD,		/* command lines */
	TG_MODE_BODY,		/* DATA body, until a lone dot */
	TG_MODE_CHUNK,		/* BDAT chunk, counted */
};

/* Where the parser is within a line (TG_MODE_CMD). */
enum tg_cmd_phase {
	TG_PH_START,		/* white space before the verb */
	TG_PH_VERB,		/* in the verb */
	TG_PH_ARGS,		/* rest of a line we do not parse */
	TG_PH_FROM,		/* MAIL: white space, then "FROM" */
	TG_PH_COLON,		/* MAIL: white space, then ':' */
	TG_PH_PATH,		/* MAIL: white space, then '<' or the address */
	TG_PH_ADDR,		/* MAIL: in the address */
	TG_PH_PARAMS,		/* MAIL: after the address (ESMTP parameters) */
	TG_PH_BAD,		/* MAIL: unparseable, skip to end of line */
	TG_PH_SIZE,		/* BDAT: white space, then the chunk size */
	TG_PH_SIZE_DIGITS,	/* BDAT: in the chunk size */
	TG_PH_SIZE_DONE,	/* BDAT: after the size ("LAST") */
};

/* Address flags while in TG_PH_ADDR. */
#define TG_AF_BRACKET	0x01	/* address started with '<' */
#define TG_AF_QUOTE	0x02	/* inside a quoted local part */
#define TG_AF_ESCAPE	0x04	/* after a backslash inside quotes */
#define TG_AF_ROUTE	0x08	/* inside a source route "@a,@b:" */
#define TG_AF_EXT	0x10	/* inside a "+extension" (not hashed) */
#define TG_AF_DOMAIN	0x20	/* after the '@' */
#define TG_AF_ROUTED	0x40	/* a source route was dropped */
#define TG_AF_LOCAL	0x80	/* a byte of the local part was hashed */

/*
 * SRS (Sender Rewriting Scheme): a forwarder rewrites the sender of mail
 * it forwards to "SRS0=HHH=TT=domain=user@forwarder" ("SRS1=" when it
 * forwards a rewritten one again). tg_cmd.srs counts the bytes of the
 * local part that match "srs0=" or "srs1=" (case folded: the scheme's
 * prefix is not case sensitive), then holds TG_SRS_0 or TG_SRS_1, or
 * TG_SRS_NO once a byte differs.
 */
#define TG_SRS_DIGIT	0x10	/* the digit was '1' */
#define TG_SRS_0	0x20	/* "SRS0=" */
#define TG_SRS_1	0x40	/* "SRS1=" */
#define TG_SRS_NO	0x80

/* DATA body end matcher (TG_MODE_BODY). */
enum tg_body_state {
	TG_BODY_MID,		/* inside a line */
	TG_BODY_SOL,		/* at the start of a line */
	TG_BODY_DOT,		/* a dot at the start of a line */
	TG_BODY_DOTCR,		/* dot, CR */
};

struct tg_cmd {
	__u64 verb;		/* packed verb of the line in progress */
	__u64 addr_key;		/* FNV-1a of the normalized address */
	__u64 domain_key;	/* FNV-1a of "@domain" */
	__u64 chunk_left;	/* BDAT: chunk bytes still to come */
	__u32 line_len;		/* bytes of the line in progress */
	__u16 addr_len;		/* bytes of the address so far */
	__u16 addr_start;	/* offset of the address in the line */
	__u8 mode;		/* enum tg_cmd_mode */
	__u8 phase;		/* enum tg_cmd_phase */
	__u8 aflags;		/* TG_AF_* */
	__u8 body;		/* enum tg_body_state */
	__u8 sub;		/* position inside a keyword ("FROM") */
	__u8 verb_len;
	__u8 cr;		/* the last byte was CR */
	__u8 odd;		/* a control byte or a bare CR before the
				 * end of the verb: cannot vouch for the line */
	__u8 no_chunking;	/* the host did not offer CHUNKING: BDAT is
				 * refused, and what follows it is commands */
	__u8 srs;		/* TG_SRS_*: how the local part begins */
	__u8 rcpt_paths;	/* RCPT's forward-path is read as MAIL's
				 * reverse-path: tg_path() only, never the
				 * kernel */
	__u8 pad[1];
};

#define TG_REPLY_NONE	0
#define TG_REPLY_FINAL	1
#define TG_REPLY_CONT	2
#define TG_REPLY_BAD	3

struct tg_reply {
	__u64 word;		/* first word after the code, packed */
	__u32 line_len;
	__u16 code;		/* code of the line in progress */
	__u8 sep;		/* '-' or ' ' after the code, 0 if none */
	__u8 bad;		/* line does not start with three digits */
	__u8 starttls;		/* reply in progress advertises STARTTLS */
	__u8 word_len;
	__u8 new_reply;		/* next line starts a new reply */
	__u8 cr;		/* the last byte was CR */
	__u8 chunking;		/* reply in progress advertises CHUNKING */
	__u8 pad[7];
};

static TG_INLINE int tg_is_space(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static TG_INLINE unsigned char tg_upper(unsigned char c)
{
	return (c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c;
}

static TG_INLINE unsigned char tg_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

static TG_INLINE __u64 tg_fnv(__u64 h, unsigned char c)
{
	return (h ^ c) * TG_FNV_PRIME;
}

static TG_INLINE void tg_cmd_init(struct tg_cmd *p)
{
	__builtin_memset(p, 0, sizeof(*p));
}

static TG_INLINE void tg_cmd_new_line(struct tg_cmd *p)
{
	p->verb = 0;
	p->verb_len = 0;
	p->line_len = 0;
	p->phase = TG_PH_START;
	p->aflags = 0;
	p->addr_len = 0;
	p->sub = 0;
	p->addr_key = TG_FNV_OFFSET;
	p->domain_key = 0;
	p->chunk_left = 0;
	p->cr = 0;
	p->odd = 0;
	p->srs = 0;
}

/* One hashed, case-folded byte of the local part (see TG_SRS_*). */
static TG_INLINE void tg_srs_byte(struct tg_cmd *p, unsigned char c)
{
	__u8 s = p->srs, n = s & 0x0f;

	if (s & (TG_SRS_0 | TG_SRS_1 | TG_SRS_NO))
		return;
	if ((n == 0 && c == 's') || (n == 1 && c == 'r') ||
	    (n == 2 && c == 's') || (n == 3 && c == '0'))
		p->srs = s + 1;
	else if (n == 3 && c == '1')
		p->srs = (s + 1) | TG_SRS_DIGIT;
	else if (n == 4 && c == '=')
		p->srs = (s & TG_SRS_DIGIT) ? TG_SRS_1 : TG_SRS_0;
	else
		p->srs = TG_SRS_NO;
}

/* 1 for an "SRS0=" sender, 2 for "SRS1=", 0 for any other. */
static TG_INLINE int tg_cmd_srs(const struct tg_cmd *p)
{
	return (p->srs & TG_SRS_0) ? 1 : (p->srs & TG_SRS_1) ? 2 : 0;
}

static TG_INLINE void tg_cmd_start_body(struct tg_cmd *p)
{
	p->mode = TG_MODE_BODY;
	p->body = TG_BODY_SOL;
}

/*
 * One address byte (TG_PH_ADDR). Returns 0 to go on, 1 when the address
 * ended at this byte (the byte is not part of it), -1 when it is malformed.
 * The end byte is '>' for a bracketed address, white space or CR/LF for a
 * bare one; the caller handles CR/LF.
 */
static TG_INLINE int tg_addr_byte(struct tg_cmd *p, unsigned char c)
{
	__u8 f = p->aflags;

	if (f & TG_AF_ROUTE) {
		/* "<@relay1,@relay2:user@domain>": the route is not hashed. */
		if (c == ':')
			p->aflags = (f & ~TG_AF_ROUTE) | TG_AF_ROUTED;
		else if (c == '>' || c <= ' ')
			return -1;
		return 0;
	}
	if (f & TG_AF_ESCAPE) {
		p->aflags = f & ~TG_AF_ESCAPE;
		goto local;
	}
	if (f & TG_AF_QUOTE) {
		/*
		 * A quoted local part is the same mailbox as its unquoted
		 * content ("alice"@b is alice@b, RFC 5321 4.1.2; Postfix
		 * smtpd reads it so): quotes and escapes are not hashed.
		 */
		if (c == '\\') {
			p->aflags = f | TG_AF_ESCAPE;
			goto count;
		}
		if (c == '"') {
			p->aflags = f & ~TG_AF_QUOTE;
			goto count;
		}
		if (c == '\r' || c == '\n')
			return -1;
		goto local;
	}
	if (c == '>')
		return (f & TG_AF_BRACKET) ? 1 : -1;
	if (tg_is_space(c))
		return (f & TG_AF_BRACKET) ? -1 : 1;
	if (c < ' ' || c == 0x7f || c == '<')
		return -1;
	if (c == '@' && p->addr_len == 0 && (f & TG_AF_BRACKET)) {
		p->aflags = f | TG_AF_ROUTE;
		return 0;
	}
	if (c == '"' && !(f & TG_AF_DOMAIN)) {
		p->aflags = f | TG_AF_QUOTE;
		goto count;
	}
	/*
	 * Comments, escapes and specials outside quotes: servers drop them
	 * (Postfix smtpd: "a(x)@b", "a\\lice@b", "alice@b;" and
	 * "alice@\"b\"" are all alice@b) or refuse the address. The parser
	 * cannot vouch for such an address. Brackets and colons stay allowed
	 * in the domain, for address literals.
	 */
	if (c == '(' || c == ')' || c == '\\' || c == ',' || c == ';' ||
	    c == '"')
		return -1;
	if (!(f & TG_AF_DOMAIN) && (c == ':' || c == '[' || c == ']'))
		return -1;
	if (c == '@') {
		if (f & TG_AF_DOMAIN)
			return -1;
		p->aflags = (f | TG_AF_DOMAIN) & ~TG_AF_EXT;
		p->domain_key = tg_fnv(TG_FNV_OFFSET, '@');
		goto hash;
	}
local:
	f = p->aflags;
	if (c == '+' && !(f & TG_AF_DOMAIN) && (f & TG_AF_LOCAL)) {
		/* recipient_delimiter: "user+ext@domain" is "user@domain" */
		if (p->addr_len >= TG_ADDR_MAX)
			return -1;
		p->aflags = f | TG_AF_EXT;
		p->addr_len++;
		return 0;
	}
hash:
	if (p->addr_len >= TG_ADDR_MAX)
		return -1;
	p->addr_len++;
	if (p->aflags & TG_AF_EXT)
		return 0;
	if (!(p->aflags & TG_AF_DOMAIN))
		p->aflags |= TG_AF_LOCAL;
	c = tg_lower(c);
	if (!(p->aflags & TG_AF_DOMAIN))
		tg_srs_byte(p, c);
	p->addr_key = tg_fnv(p->addr_key, c);
	if ((p->aflags & TG_AF_DOMAIN) && c != '@')
		p->domain_key = tg_fnv(p->domain_key, c);
	return 0;
count:
	if (p->addr_len >= TG_ADDR_MAX)
		return -1;
	p->addr_len++;
	return 0;
}

/* The MAIL argument, one byte that is not CR or LF. */
static TG_INLINE void tg_mail_arg(struct tg_cmd *p, unsigned char c)
{
	int r;

	switch (p->phase) {
	case TG_PH_FROM: {
		/* "FROM" after MAIL, "TO" after RCPT (tg_path() only) */
		__u8 kwlen = p->verb == TG_VERB_MAIL ? 4 : 2;
		__u64 kw = p->verb == TG_VERB_MAIL ? TG_V4('F', 'R', 'O', 'M') :
						     TG_V2('T', 'O');

		if (p->sub == 0 && tg_is_space(c))
			return;
		if (p->sub < kwlen &&
		    tg_upper(c) == ((kw >> (8 * (p->sub & 3))) & 0xff)) {
			p->sub++;
			if (p->sub == kwlen)
				p->phase = TG_PH_COLON;
			return;
		}
		break;
	}
	case TG_PH_COLON:
		if (tg_is_space(c))
			return;
		if (c == ':') {
			p->phase = TG_PH_PATH;
			return;
		}
		break;
	case TG_PH_PATH:
		if (tg_is_space(c))
			return;
		p->phase = TG_PH_ADDR;
		/* line_len already counts this byte */
		p->addr_start = (__u16)(p->line_len < 0xffff ? p->line_len : 0xffff);
		if (c == '<') {
			p->aflags = TG_AF_BRACKET;
			return;
		}
		p->addr_start--;
		r = tg_addr_byte(p, c);
		if (r == 0)
			return;
		break;
	case TG_PH_ADDR:
		r = tg_addr_byte(p, c);
		if (r == 0)
			return;
		if (r > 0) {
			p->phase = TG_PH_PARAMS;
			return;
		}
		break;
	case TG_PH_PARAMS:
	case TG_PH_BAD:
		return;
	}
	p->phase = TG_PH_BAD;
}

/* The verb has ended at a byte that is not CR or LF. */
static TG_INLINE void tg_verb_done(struct tg_cmd *p)
{
	if (p->verb == TG_VERB_MAIL ||
	    (p->verb == TG_VERB_RCPT && p->rcpt_paths))
		p->phase = TG_PH_FROM;
	else if (p->verb == TG_VERB_BDAT)
		p->phase = TG_PH_SIZE;
	else
		p->phase = TG_PH_ARGS;
}

/*
 * How the path of a MAIL (or, in tg_path(), RCPT) line ends with the
 * line: TG_CMD_MAIL, TG_CMD_MAIL_NULL or TG_CMD_MAIL_BAD.
 */
static TG_INLINE int tg_path_end(const struct tg_cmd *p)
{
	int ev;

	if (p->odd || p->line_len - p->cr > TG_LINE_MAX)
		return TG_CMD_MAIL_BAD;
	if (p->phase == TG_PH_PARAMS ||
	    (p->phase == TG_PH_ADDR &&
	     !(p->aflags & (TG_AF_BRACKET | TG_AF_QUOTE | TG_AF_ROUTE))))
		ev = p->addr_len ? TG_CMD_MAIL :
		     (p->aflags & TG_AF_ROUTED) ? TG_CMD_MAIL_BAD :
		     TG_CMD_MAIL_NULL;
	else
		ev = TG_CMD_MAIL_BAD;
	/* "user@" and "<@route:>" name nobody we could match: */
	if (ev == TG_CMD_MAIL && (p->aflags & TG_AF_DOMAIN) &&
	    p->domain_key == tg_fnv(TG_FNV_OFFSET, '@'))
		ev = TG_CMD_MAIL_BAD;
	return ev;
}

/* End of a command line. */
static TG_INLINE int tg_cmd_eol(struct tg_cmd *p)
{
	int ev = TG_CMD_LINE;

	if (p->odd) {
		ev = TG_CMD_MAIL_BAD;
	} else if (p->verb == TG_VERB_MAIL) {
		ev = tg_path_end(p);
	} else if (p->verb == TG_VERB_BDAT && !p->no_chunking &&
		   (p->phase == TG_PH_SIZE_DIGITS ||
		    p->phase == TG_PH_SIZE_DONE) && p->chunk_left) {
		p->mode = TG_MODE_CHUNK;
	}
	if (ev != TG_CMD_MAIL && ev != TG_CMD_MAIL_NULL) {
		p->addr_key = p->domain_key = 0;
		p->srs = 0;
	}
	if (ev == TG_CMD_MAIL && !(p->aflags & TG_AF_DOMAIN))
		p->srs = 0;	/* "SRS0=x" without a domain is not SRS */
	/* Keep verb and keys for the caller; the next byte starts afresh. */
	p->phase = TG_PH_START;
	p->line_len = 0;
	return ev;
}

/*
 * The line in progress may be a MAIL command (or its verb is not known
 * yet): none of its bytes may leave before it ends.
 */
static TG_INLINE int tg_cmd_holding(const struct tg_cmd *p)
{
	__u64 v = p->verb, m = TG_VERB_MAIL;

	if (p->mode != TG_MODE_CMD || p->line_len == 0)
		return 0;
	if (p->phase == TG_PH_START || p->odd)
		return 1;
	if (p->phase != TG_PH_VERB)
		return v == TG_VERB_MAIL;
	if (p->verb_len > 4)
		return 0;
	/* a prefix of "MAIL" so far */
	m &= (1ULL << (8 * (p->verb_len & 7))) - 1;
	return v == m;
}

static TG_INLINE int tg_cmd_feed(struct tg_cmd *p, unsigned char c)
{
	if (p->mode == TG_MODE_CHUNK) {
		if (p->chunk_left > 1) {
			p->chunk_left--;
			return TG_CMD_NONE;
		}
		p->chunk_left = 0;
		p->mode = TG_MODE_CMD;
		tg_cmd_new_line(p);
		return TG_CMD_CHUNK_END;
	}
	if (p->mode == TG_MODE_BODY) {
		switch (p->body) {
		case TG_BODY_SOL:
			if (c == '.') {
				p->body = TG_BODY_DOT;
				return TG_CMD_NONE;
			}
			break;
		case TG_BODY_DOT:
			if (c == '\r') {
				p->body = TG_BODY_DOTCR;
				return TG_CMD_NONE;
			}
			/* fall through */
		case TG_BODY_DOTCR:
			if (c == '\n') {
				p->mode = TG_MODE_CMD;
				tg_cmd_new_line(p);
				return TG_CMD_BODY_END;
			}
			if (p->body == TG_BODY_DOTCR && c == '.') {
				/* ".\r." : a line starts after the bare CR */
				p->body = TG_BODY_DOT;
				return TG_CMD_NONE;
			}
			break;
		}
		p->body = (c == '\n' || c == '\r') ? TG_BODY_SOL : TG_BODY_MID;
		return TG_CMD_NONE;
	}

	if (p->line_len == 0)
		tg_cmd_new_line(p);
	if (c == '\n')
		return tg_cmd_eol(p);
	if (p->line_len < 0xffffffffU)
		p->line_len++;
	/*
	 * In a line that may still be MAIL, a control byte or a CR that does
	 * not end the line, before the verb has ended, is read by servers as
	 * white space (Postfix smtpd: isspace(), so "MAIL\vFROM:<a@b>" and
	 * "\fMAIL FROM:<a@b>" are MAIL FROM), as the end of the line (NUL) or
	 * not at all ("MA\rIL"). The parser cannot tell which: it holds the
	 * line and does not vouch for it (TG_CMD_MAIL_BAD).
	 */
	if ((p->phase == TG_PH_START || p->phase == TG_PH_VERB) &&
	    (p->cr || (c < ' ' && c != '\t' && c != '\r')) &&
	    tg_cmd_holding(p))
		p->odd = 1;
	p->cr = c == '\r';
	if (c == '\r')
		return TG_CMD_NONE;

	switch (p->phase) {
	case TG_PH_START:
		if (tg_is_space(c))
			return TG_CMD_NONE;
		p->phase = TG_PH_VERB;
		/* fall through */
	case TG_PH_VERB:
		if (tg_is_space(c)) {
			tg_verb_done(p);
			return TG_CMD_NONE;
		}
		if (p->verb_len < 8)
			p->verb |= (__u64)tg_upper(c) << (8 * (p->verb_len & 7));
		else
			p->verb = TG_VERB_LONG;
		if (p->verb_len < 255)
			p->verb_len++;
		return TG_CMD_NONE;
	case TG_PH_SIZE:
		if (tg_is_space(c))
			return TG_CMD_NONE;
		p->phase = TG_PH_SIZE_DIGITS;
		/* fall through */
	case TG_PH_SIZE_DIGITS:
		if (c >= '0' && c <= '9' && p->sub < 18) {
			p->chunk_left = p->chunk_left * 10 + (c - '0');
			p->sub++;
		} else if (tg_is_space(c) && p->sub) {
			/* "BDAT 12 LAST" */
			p->phase = TG_PH_SIZE_DONE;
		} else {
			/* "BDAT 12x" is refused by servers */
			p->chunk_left = 0;
			p->phase = TG_PH_ARGS;
		}
		return TG_CMD_NONE;
	case TG_PH_SIZE_DONE:
	case TG_PH_ARGS:
		return TG_CMD_NONE;
	default:
		tg_mail_arg(p, c);
		return TG_CMD_NONE;
	}
}

/*
 * Bytes that a DATA body in TG_BODY_MID passes over: feeding one of them
 * there changes nothing (no line starts). tg_body_quiet8() asks the same
 * of eight bytes at once (any byte order), so that a scanner can skip
 * the middle of body lines a word at a time; it must agree with
 * tg_cmd_feed() byte for byte (tests/unit/test_smtp.c checks it).
 */
static TG_INLINE int tg_body_quiet(unsigned char c)
{
	return c != '\n' && c != '\r';
}

#define TG_ONES8	0x0101010101010101ULL
#define TG_HIGH8	0x8080808080808080ULL

/* Some byte of w is c. */
static TG_INLINE int tg_has_byte(__u64 w, unsigned char c)
{
	__u64 x = w ^ (TG_ONES8 * c);

	return ((x - TG_ONES8) & ~x & TG_HIGH8) != 0;
}

static TG_INLINE int tg_body_quiet8(__u64 w)
{
	return !tg_has_byte(w, '\n') && !tg_has_byte(w, '\r');
}

static TG_INLINE void tg_reply_init(struct tg_reply *r)
{
	__builtin_memset(r, 0, sizeof(*r));
	r->new_reply = 1;
}

/* One byte at offset n of a reply line, other than the final CR LF. */
static TG_INLINE void tg_reply_byte(struct tg_reply *r, __u32 n,
				    unsigned char c)
{
	if (n < 3) {
		if (c >= '0' && c <= '9')
			r->code = r->code * 10 + (c - '0');
		else
			r->bad = 1;
	} else if (n == 3) {
		if (c == '-' || c == ' ')
			r->sep = c;
		else
			r->bad = 1;
	} else if (r->word_len < 9) {
		/* "250-STARTTLS", "250 STARTTLS": the first word only */
		if (c == ' ' || c == '\t') {
			if (r->word_len)
				r->word_len |= 0x10;
		} else if (r->word_len < 8) {
			r->word |= (__u64)tg_upper(c) << (8 * (r->word_len & 7));
			r->word_len++;
		} else {
			r->word_len = 9;
		}
	}
}

static TG_INLINE int tg_reply_feed(struct tg_reply *r, unsigned char c)
{
	__u32 n = r->line_len;
	int ev;

	if (c == '\n') {
		/* 0x10: the word ended at white space */
		if ((r->word_len & ~0x10) == 8 && r->word == TG_VERB_STARTTLS)
			r->starttls = 1;
		if ((r->word_len & ~0x10) == 8 && r->word == TG_WORD_CHUNKING)
			r->chunking = 1;
		/* the CR before the LF is not part of the line */
		if (n - r->cr < 3 || r->bad)
			ev = TG_REPLY_BAD;
		else
			ev = r->sep == '-' ? TG_REPLY_CONT : TG_REPLY_FINAL;
		r->new_reply = ev != TG_REPLY_CONT;
		r->line_len = 0;
		r->cr = 0;
		return ev;
	}
	if (n == 0) {
		if (r->new_reply)
			r->starttls = r->chunking = 0;
		r->code = 0;
		r->sep = 0;
		r->bad = 0;
		r->word = 0;
		r->word_len = 0;
	}
	if (n < 0xffffffffU)
		r->line_len = n + 1;
	/*
	 * A CR is the end of the line only when LF follows; any other CR is
	 * a byte of the line, as the MTA reads it (Postfix: "250\rX" is not a
	 * reply line, "START\rTLS" is not STARTTLS).
	 */
	if (r->cr)
		tg_reply_byte(r, n - 1, '\r');
	r->cr = c == '\r';
	if (!r->cr)
		tg_reply_byte(r, n, c);
	return TG_REPLY_NONE;
}

/*
 * Policy key of a senders-file address: runs the MAIL parser over it, so
 * that the file and the wire can never disagree on normalization.
 */
static TG_INLINE __u64 tg_addr_key_srs(const char *addr, __u32 len,
				       __u64 *domain_key, int *srs)
{
	struct tg_cmd p;
	__u32 i;
	int r;

	tg_cmd_init(&p);
	tg_cmd_new_line(&p);
	*domain_key = 0;
	if (len == 0 || len > TG_ADDR_MAX)
		return 0;
	p.phase = TG_PH_ADDR;
	for (i = 0; i < len && i < TG_ADDR_MAX; i++) {
		r = tg_addr_byte(&p, (unsigned char)addr[i]);
		if (r != 0)
			return 0;
	}
	if (p.aflags & (TG_AF_QUOTE | TG_AF_ROUTE))
		return 0;
	/* "user@" and "@" name nobody, as in tg_cmd_eol() */
	if ((p.aflags & TG_AF_DOMAIN) &&
	    p.domain_key == tg_fnv(TG_FNV_OFFSET, '@'))
		return 0;
	if (p.aflags & TG_AF_DOMAIN)
		*domain_key = p.domain_key;
	if (srs)
		*srs = (p.aflags & TG_AF_DOMAIN) ? tg_cmd_srs(&p) : 0;
	return p.addr_key;
}

static TG_INLINE __u64 tg_addr_key(const char *addr, __u32 len,
				   __u64 *domain_key)
{
	return tg_addr_key_srs(addr, len, domain_key, 0);
}

/*
 * The path of one command line, for user space (tlsguardd's replies and
 * audit trail): the bytes of line up to len or its LF are run through
 * tg_cmd_feed() with RCPT's forward-path read as MAIL's reverse-path.
 * p->verb is the line's verb. For a MAIL or RCPT line, returns
 * tg_path_end()'s event, and for TG_CMD_MAIL the address as written
 * (without brackets and source route) is the *n bytes at line + *start,
 * with p->addr_key and p->domain_key; for any other line, TG_CMD_LINE.
 */
static TG_INLINE int tg_path(const char *line, __u32 len, struct tg_cmd *p,
			     __u32 *start, __u32 *n)
{
	__u32 i, route_end = 0;
	int ev;

	tg_cmd_init(p);
	p->rcpt_paths = 1;
	*start = *n = 0;
	for (i = 0; i < len && i <= TG_LINE_MAX + 1 && line[i] != '\n'; i++) {
		tg_cmd_feed(p, (unsigned char)line[i]);
		if ((p->aflags & TG_AF_ROUTED) && !route_end)
			route_end = i + 1;
	}
	if (i == 0 || (p->verb != TG_VERB_MAIL && p->verb != TG_VERB_RCPT))
		return TG_CMD_LINE;
	ev = tg_path_end(p);
	if (ev == TG_CMD_MAIL) {
		*start = route_end ? route_end : p->addr_start;
		*n = p->addr_len;
	}
	return ev;
}


#endif /* TG_SMTP_H */
