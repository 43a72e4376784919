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
 *	int	tg_cmd_sender_known(const struct tg_cmd *p);
 *	void	tg_cmd_start_body(struct tg_cmd *p);
 *
 *	void	tg_reply_init(struct tg_reply *r);
 *	int	tg_reply_feed(struct tg_reply *r, unsigned char c);
 *	int	tg_reply_class(const struct tg_reply *r);
 *	int	tg_reply_data(const struct tg_reply *r);
 *	int	tg_reply_line(struct tg_reply *r, const unsigned char *buf,
 *			      __u32 len);
 *	int	tg_cmd_line(struct tg_cmd *p, const unsigned char *buf,
 *			    __u32 len);
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
 *	with tg_cmd_start_body(), after the server accepted DATA (any 3xx:
 *	see tg_reply_data()).
 * .IP TG_CMD_BODY_AMBIGUOUS
 *	a line that ends the DATA body for some servers only (see below):
 *	the caller cannot know whether commands follow and must fail closed.
 * .IP TG_CMD_CHUNK_END
 *	the end of a BDAT chunk; BDAT sizes are framed by the parser itself.
 * .IP TG_CMD_CHUNK_BAD
 *	a BDAT command whose chunk the parser does not frame (see below):
 *	the caller cannot know where the commands resume, and must fail the
 *	flow closed. The parser reads what follows as commands.
 * .PP
 *	A line ends at LF; a CR before it is ignored. The verb may be preceded
 *	by white space and is matched without regard to case, as servers do.
 *	The MAIL argument is parsed as servers accept it: "FROM" in any case,
 *	optional white space around the colon, a bracketed or bare address,
 *	then ESMTP parameters, which are skipped.
 *
 *	tg_cmd_holding() says whether the line in progress may still turn out
 *	to be a MAIL command: its bytes must not leave before the line ends.
 *	tg_cmd_sender_known() says whether such a line names its sender
 *	already (its address has ended): a sender that is not guaranteed
 *	may then pass before the line ends, however long its parameters.
 *
 *	The end of a DATA body is where the servers end it, and a line
 *	starts after LF only: Postfix smtpd, Exim and OpenSMTPD read a line
 *	up to LF, none starts one after a bare CR ("x\r.\r\n" is text).
 *	They differ on the dot line: Postfix smtpd (smtpd_forbid_bare_newline
 *	= no, the default before 3.9) ends the body at a line "." after LF,
 *	every CR before the LF dropped; with = normalize (3.9's default) or
 *	= reject only at CR LF "." CR LF; Exim 4.96 at [CR] LF "." [CR] LF
 *	(4.97.1 with strict CRLF: CR LF only); OpenSMTPD 6.8 at a line that
 *	reads "." as a C string once one CR before the LF is dropped. So
 *	TG_CMD_BODY_END comes only at CR LF "." CR LF (or "." CR LF as the
 *	first line of the body). A line that ends the body for some of them
 *	only gives TG_CMD_BODY_AMBIGUOUS: "." after a bare LF, "." then LF
 *	alone, "." then two CRs or more, "." then a NUL. Neither reading of
 *	such a line is safe: seeing the end too late lets commands pass as
 *	body text; seeing it too early reads text as commands, where a
 *	"BDAT" line could frame a chunk over the real commands. The caller
 *	must fail the flow closed; the parser reads commands after it.
 *
 *	tg_reply_feed() parses what an SMTP server writes, line by line, and
 *	ends a reply exactly where Postfix's smtp client (smtp_get(),
 *	smtp_chat_resp()) ends it: a line ends at LF; Postfix reads at most
 *	TG_REPLY_LINE bytes of it and drops every CR before the LF of a line
 *	that fits; the line ends at a NUL. Three digits then '-' continue
 *	the reply; three digits then a space or the end of the line end it;
 *	any other line is garbage, which Postfix reads as part of the reply
 *	(it warns, and goes on reading). The code of a reply is that of its
 *	last line. At each LF it returns one event (TG_REPLY_NONE before):
 * .IP TG_REPLY_FINAL
 *	the last line of a reply; r->code holds its code and
 *	tg_reply_class(r) its class (2 for 2xx...).
 * .IP TG_REPLY_CONT
 *	a continuation line ("250-").
 * .IP TG_REPLY_BAD
 *	a line whose first three bytes are not digits, or one that only
 *	Postfix reads without aborting: the reply goes on (Postfix), or the
 *	client gives up on the session (Exim, OpenSMTPD).
 * .IP TG_REPLY_AMBIGUOUS
 *	a line that the SMTP clients tlsguard guards read differently, so
 *	that the count of replies (or the class of this one) depends on the
 *	client: three digits then a byte other than '-', ' ' or NUL (or
 *	then only CRs, on a line longer than TG_REPLY_LINE), which Postfix
 *	takes as garbage but Exim 4.96 (when only white space follows:
 *	it strips trailing isspace()) or OpenSMTPD 6.8 (code 2xx..5xx, line
 *	shorter than 2048 bytes less one CR: anything but '-' ends a reply)
 *	take as the last line of the reply; or the last line of a reply
 *	whose first line was a continuation line of another class (Exim and
 *	OpenSMTPD take the class from the first line, Postfix from the
 *	last). The caller must not go on counting: fail the flow closed.
 *	The parser itself goes on as Postfix reads: r->new_reply is then set
 *	when Postfix ended the reply at this line, and r->code is the line's.
 * .PP
 *	tg_reply_data() says what follows a reply to DATA (the last reply
 *	read): TG_DATA_BODY after any 3xx (Postfix, Exim and OpenSMTPD send
 *	the body after any 3xx, not only 354), TG_DATA_UNSURE after a 2xx
 *	(OpenSMTPD sends the body, Postfix and Exim do not: fail closed),
 *	TG_DATA_NONE otherwise. Likewise every one of them starts TLS after
 *	any 2xx reply to STARTTLS, and reads the EHLO keywords of any 2xx
 *	reply to EHLO: callers test tg_reply_class(), not a code.
 *
 *	r->starttls (r->chunking) is set when a line of the reply in progress
 *	has STARTTLS (CHUNKING) as its first word after the separator (the
 *	CRs before the LF dropped); both are cleared when the next reply
 *	starts.
 *
 *	A BDAT chunk is framed only for the line clients write, "BDAT" SP
 *	size [SP "LAST"] (spaces only, the verb first on the line, LAST in
 *	any case, at most TG_CHUNK_DIGITS digits), of at most TG_CHUNK_MAX
 *	bytes, inside a mail transaction (after MAIL, until RSET, HELO,
 *	EHLO, QUIT, the end of a DATA body or of the LAST chunk), to a host
 *	that offered CHUNKING. Any other line whose verb is (or, with
 *	control bytes before its end, may be) BDAT gives TG_CMD_CHUNK_BAD:
 *	servers frame such lines differently (Exim reads the size with
 *	sscanf("%u %n"), so "BDAT 12x" and "BDAT 12 FOO" are chunks of 12
 *	and "BDAT +12" one too, and a size above 2^32 wraps; Postfix takes
 *	digits only, as an off_t, and words split by isspace()), and a size
 *	read out of step would blind the parser for the rest of the
 *	connection. No client writes BDAT outside a transaction or to a
 *	host that did not offer CHUNKING (p->no_chunking, set by the caller
 *	from the EHLO reply); Exim's server refuses such a BDAT and reads
 *	what follows as commands, Postfix's hangs up or reads the chunk.
 *
 *	tg_addr_key() computes the policy key of an address written as in a
 *	senders file: the same normalization as the MAIL parser (ASCII case
 *	folded, a "+extension" dropped from the local part, a source route
 *	dropped, the quoting of a quoted local part dropped, a trailing dot
 *	of the domain dropped unless it follows a dot or the '@') and the
 *	same 64-bit FNV-1a hash. *domain_key receives the key
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
 *	file entry byte for byte outside of ASCII letters, and an IDN domain
 *	in UTF-8 does not match its A-label (xn--) form.
 *
 *	Other forms that servers read as the same mailbox keep keys of
 *	their own: an address literal written otherwise ("[192.0.2.1]" and
 *	"[IPv6:...]" forms, leading zeros), a local part without a domain
 *	and with a trailing dot ("alice." is "alice" to Postfix), a local
 *	part that routes with '%' or '!' ("alice%example.org@relay"). Comments,
 *	escapes and specials outside quotes are not vouched for
 *	(TG_CMD_MAIL_BAD).
 */
#ifndef TG_SMTP_H
#define TG_SMTP_H

#include "tg_types.h"

/*
 * A MAIL line is judged by its address, however long the line: ESMTP
 * parameters after the address do not change the sender. The address
 * must end within the first TG_LINE_MAX bytes of the line: Postfix smtpd
 * reads that much of a line (line_length_limit) and drops the rest, so
 * an address that ends later is not the one it reads.
 */
#define TG_LINE_MAX 2048	/* the address ends within this many bytes */
#define TG_ADDR_MAX TG_LINE_MAX /* longest address we vouch for */

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
	TG_CMD_BODY_AMBIGUOUS,
	TG_CMD_CHUNK_BAD,
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
	/* BDAT phases last: tg_cmd_feed() tests phase >= TG_PH_SIZE */
	TG_PH_SIZE,		/* BDAT: spaces, then the chunk size */
	TG_PH_SIZE_DIGITS,	/* BDAT: in the chunk size */
	TG_PH_SIZE_DONE,	/* BDAT: after the size: spaces, "LAST" */
};

/*
 * BDAT. A chunk is framed only for the form clients write ("BDAT" SP
 * size [SP "LAST"]): servers read other forms differently. The chunk
 * size is bounded: a chunk is as long as a message (Exim's client sends
 * a message as one chunk) and messages are smaller (message_size_limit:
 * Postfix 10240000 by default, Exim 50M); above 2^32 Exim's server (a
 * 32-bit %u) and Postfix's (an off_t) would not even agree on it.
 */
#define TG_CHUNK_MAX	(1ULL << 30)	/* bytes */
#define TG_CHUNK_DIGITS	10

/* BDAT line flags (tg_cmd.bflags). */
#define TG_BF_BAD	0x01	/* not a form the parser frames */
#define TG_BF_LAST	0x02	/* "LAST": the transaction ends with it */
#define TG_BF_LEAD	0x04	/* white space before the verb */

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
 * Domain flags (tg_cmd.dflags). A trailing dot is not part of the domain
 * (Postfix's trivial-rewrite strips it, but not after a dot or the '@'):
 * a dot that may be the last byte waits to be hashed until another
 * domain byte follows.
 */
#define TG_DF_DOT	0x01	/* a dot not hashed yet */
#define TG_DF_SEP	0x02	/* the last domain byte was '@' or '.' */

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

/*
 * BATV (Bounce Address Tag Validation): a signing MTA rewrites a sender
 * as "prvs=TAG=user@domain" (draft-levine-smtp-batv; Exim, Postfix's
 * postscreen users, Proofpoint) or "btv1==TAG==user@domain" (Barracuda),
 * with a new TAG every day. The mailbox is user@domain: the prefix up to
 * the '=' (the "==") after the TAG is not hashed. tg_cmd.batv counts the
 * bytes of the local part that match "prvs=" or "btv1==" (case folded),
 * then TG_BATV_TAG while in the TAG, TG_BATV_EQ after its first '='
 * (btv1), and TG_BATV_NO once the prefix is done with or cannot be one.
 */
#define TG_BATV_BTV 0x08 /* the prefix is "btv1==" */
#define TG_BATV_TAG 0x10 /* in the TAG */
#define TG_BATV_EQ  0x20 /* btv1: the TAG's first '=' */
#define TG_BATV_NO  0x80

/*
 * The sender's flags for tg_rule() (include/tg_rule.h), beside the SRS
 * kind of tg_cmd_srs() in the low bits.
 */
#define TG_SENDER_SRS 0x03 /* tg_cmd_srs() */
#define TG_SENDER_IDN 0x04 /* the domain has a byte that is not ASCII */

/*
 * The sub-address delimiters (Postfix's recipient_delimiter; "+" by
 * default): a set of ASCII bytes, bit c of tg_delims[c >> 6]. The BPF
 * programs read it from .rodata, which the agent sets before load
 * (bpf/tg_common.bpf.h); native code defines it once (lib/tg_mailaddr.c,
 * the fuzz targets). Every reader of addresses in one process or one
 * object sees the same set: the senders file and the wire agree.
 */
#ifdef __bpf__
extern const volatile __u64 tg_delims[2];
#else
extern __u64 tg_delims[2];
#endif
#define TG_DELIMS_PLUS (1ULL << '+') /* tg_delims[0] of "+" */

/*
 * DATA body end matcher (TG_MODE_BODY): where the line in progress is.
 * A line starts after LF only; TG_BODY_BARE marks one that started after
 * a bare LF (not CR LF), until a byte shows that the line does not start
 * with "." (TG_BODY_MID and TG_BODY_MIDCR never carry it).
 */
enum tg_body_state {
	TG_BODY_MID,		/* inside a line, the last byte not CR */
	TG_BODY_SOL,		/* at the start of a line */
	TG_BODY_DOT,		/* the line so far is "." */
	TG_BODY_DOTCR,		/* "." CR */
	TG_BODY_MIDCR,		/* inside a line, after a CR */
	TG_BODY_DOTCRS,		/* "." CR CR, and maybe more CRs */
	TG_BODY_DOTNUL,		/* "." NUL, then anything but LF */
};
#define TG_BODY_BARE	0x80

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
	__u8 no_chunking;	/* the host did not offer CHUNKING: a BDAT
				 * is not framed (TG_CMD_CHUNK_BAD) */
	__u8 srs;		/* TG_SRS_*: how the local part begins */
	__u8 bflags;		/* TG_BF_*: the BDAT line in progress */
	__u8 tx;		/* a mail transaction is open: MAIL seen, no
				 * end of data, RSET, HELO/EHLO, QUIT since */
	__u8 dflags;		/* TG_DF_* */
	__u8 rcpt_paths;	/* RCPT's forward-path is read as MAIL's
				 * reverse-path: tg_path() only, never the
				 * kernel */
	__u8 idn;	  /* a byte of the domain is not ASCII */
	__u8 batv;	  /* TG_BATV_*: how the local part begins */
};

#define TG_REPLY_NONE	0
#define TG_REPLY_FINAL	1
#define TG_REPLY_CONT	2
#define TG_REPLY_BAD	3
#define TG_REPLY_AMBIGUOUS 4

/*
 * Postfix's smtp client reads this much of a reply line (line_length_limit,
 * 2048 by default) and skips the rest; OpenSMTPD's refuses a line of
 * LINE_MAX (2048 on Linux) bytes or more, less one CR before the LF.
 */
#define TG_REPLY_LINE	2048

/* tg_reply_data(): what the client does after the reply to DATA. */
#define TG_DATA_NONE	0	/* no body: commands follow */
#define TG_DATA_BODY	1	/* the body follows */
#define TG_DATA_UNSURE	2	/* depends on the client */

/* Reply line flags (tg_reply.lflags), about the bytes from offset 3 on. */
#define TG_RL_NOTCR	0x01	/* a byte other than CR */
#define TG_RL_NOTWS	0x02	/* a byte that C's isspace() refuses */

struct tg_reply {
	__u64 word;		/* first word after the code, packed */
	__u32 line_len;
	__u16 code;		/* code of the line in progress */
	__u8 sep;		/* the byte at offset 3 (line_len > 3) */
	__u8 bad;		/* a non-digit among the first three bytes */
	__u8 starttls;		/* reply in progress advertises STARTTLS */
	__u8 word_len;
	__u8 new_reply;		/* next line starts a new reply */
	__u8 cr;		/* the last byte was CR */
	__u8 chunking;		/* reply in progress advertises CHUNKING */
	__u8 lflags;		/* TG_RL_* of the line in progress */
	__u8 first;		/* '0' + class of the reply's first line, when
				 * that line was a continuation; else 0 */
	__u8 pad[5];
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

static TG_INLINE int tg_is_delim(unsigned char c)
{
	return c < 128 && ((tg_delims[(c >> 6) & 1] >> (c & 63)) & 1);
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
	p->bflags = 0;
	p->dflags = 0;
	p->srs = 0;
	p->idn = 0;
	p->batv = 0;
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

/* TG_SENDER_IDN when a byte of the sender's domain is not ASCII. */
static TG_INLINE int tg_cmd_idn(const struct tg_cmd *p)
{
	return p->idn ? TG_SENDER_IDN : 0;
}

/*
 * One hashed, case-folded byte of the local part (see TG_BATV_*).
 * Returns 1 when the byte ends a BATV prefix: the local part starts
 * again after it.
 */
static TG_INLINE int tg_batv_byte(struct tg_cmd *p, unsigned char c)
{
	__u8 s = p->batv, n = s & 0x07;

	if (s & TG_BATV_NO)
		return 0;
	if (s & TG_BATV_EQ) {
		p->batv = TG_BATV_NO;
		return c == '=';
	}
	if (s & TG_BATV_TAG) {
		if (c != '=')
			return 0;
		if (s & TG_BATV_BTV) {
			p->batv = s | TG_BATV_EQ;
			return 0;
		}
		p->batv = TG_BATV_NO;
		return 1;
	}
	/* "prvs=" or "btv1==", n bytes of it matched so far */
	if (n == 0 && (c == 'p' || c == 'b'))
		p->batv = c == 'b' ? 1 | TG_BATV_BTV : 1;
	else if (!(s & TG_BATV_BTV) &&
		 ((n == 1 && c == 'r') || (n == 2 && c == 'v') ||
		  (n == 3 && c == 's')))
		p->batv = s + 1;
	else if ((s & TG_BATV_BTV) &&
		 ((n == 1 && c == 't') || (n == 2 && c == 'v') ||
		  (n == 3 && c == '1') || (n == 4 && c == '=')))
		p->batv = s + 1;
	else if (c == '=' && (n == 4 || n == 5))
		p->batv = TG_BATV_TAG | (s & TG_BATV_BTV);
	else
		p->batv = TG_BATV_NO;
	return 0;
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
	if (tg_is_delim(c) && !(f & TG_AF_DOMAIN) && (f & TG_AF_LOCAL) &&
	    !(p->batv & (TG_BATV_TAG | TG_BATV_EQ))) {
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
	else if (c == '@')
		p->dflags = TG_DF_SEP;
	else {
		if (p->dflags & TG_DF_DOT) {
			p->addr_key = tg_fnv(p->addr_key, '.');
			p->domain_key = tg_fnv(p->domain_key, '.');
			p->dflags = TG_DF_SEP;
		}
		if (c == '.' && !(p->dflags & TG_DF_SEP)) {
			p->dflags = TG_DF_DOT;
			return 0;
		}
		p->dflags = c == '.' ? TG_DF_SEP : 0;
	}
	c = tg_lower(c);
	if (!(p->aflags & TG_AF_DOMAIN)) {
		tg_srs_byte(p, c);
		if (tg_batv_byte(p, c)) {
			/* "prvs=TAG=": the mailbox starts after it */
			p->addr_key = TG_FNV_OFFSET;
			p->aflags &= ~TG_AF_LOCAL;
			p->srs = 0;
			return 0;
		}
	} else if (c >= 0x80) {
		p->idn = 1;
	}
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
		/*
		 * The first byte of a bare address (not white space, so it
		 * cannot end the address): one copy of tg_addr_byte() for
		 * the verifier to walk, not two.
		 */
		/* fall through */
	case TG_PH_ADDR:
		r = tg_addr_byte(p, c);
		if (r == 0)
			return;
		if (r > 0) {
			/* see TG_LINE_MAX */
			p->phase = p->line_len > TG_LINE_MAX ? TG_PH_BAD :
							       TG_PH_PARAMS;
			return;
		}
		break;
	case TG_PH_PARAMS:
	case TG_PH_BAD:
		return;
	}
	p->phase = TG_PH_BAD;
}

/* The verb has ended at white space c. */
static TG_INLINE void tg_verb_done(struct tg_cmd *p, unsigned char c)
{
	if (p->verb == TG_VERB_MAIL ||
	    (p->verb == TG_VERB_RCPT && p->rcpt_paths)) {
		p->phase = TG_PH_FROM;
	} else if (p->verb == TG_VERB_BDAT) {
		/* Exim: the verb must begin the line and end at a space */
		p->phase = TG_PH_SIZE;
		if (c != ' ' || (p->bflags & TG_BF_LEAD))
			p->bflags |= TG_BF_BAD;
	} else {
		p->phase = TG_PH_ARGS;
	}
}

/* One byte of a BDAT line after the verb, other than CR or LF. */
static TG_INLINE void tg_bdat_arg(struct tg_cmd *p, unsigned char c)
{
	switch (p->phase) {
	case TG_PH_SIZE:
		if (c == ' ')
			return;
		p->phase = TG_PH_SIZE_DIGITS;
		p->sub = 0;
		/* fall through */
	case TG_PH_SIZE_DIGITS:
		if (c >= '0' && c <= '9' && p->sub < TG_CHUNK_DIGITS) {
			p->chunk_left = p->chunk_left * 10 + (c - '0');
			p->sub++;
			return;
		}
		if (c == ' ' && p->sub) {
			p->phase = TG_PH_SIZE_DONE;
			p->sub = 0;
			return;
		}
		break;
	case TG_PH_SIZE_DONE:
		if (c == ' ' && (p->sub == 0 || p->sub == 4))
			return;
		if (p->sub < 4 &&
		    tg_upper(c) == ((TG_V4('L', 'A', 'S', 'T') >> (8 * (p->sub & 3))) & 0xff)) {
			p->sub++;
			if (p->sub == 4)
				p->bflags |= TG_BF_LAST;
			return;
		}
		break;
	}
	p->bflags |= TG_BF_BAD;
	p->phase = TG_PH_ARGS;
}

/* The BDAT line ending now announces a chunk the parser can frame. */
static TG_INLINE int tg_bdat_ok(const struct tg_cmd *p)
{
	if ((p->bflags & TG_BF_BAD) || p->no_chunking || !p->tx ||
	    p->chunk_left > TG_CHUNK_MAX)
		return 0;
	return p->phase == TG_PH_SIZE_DIGITS ||
	       (p->phase == TG_PH_SIZE_DONE && (p->sub == 0 || p->sub == 4));
}

/*
 * How the path of a MAIL (or, in tg_path(), RCPT) line ends with the
 * line: TG_CMD_MAIL, TG_CMD_MAIL_NULL or TG_CMD_MAIL_BAD.
 */
static TG_INLINE int tg_path_end(const struct tg_cmd *p)
{
	int ev;

	if (p->odd)
		return TG_CMD_MAIL_BAD;
	/* the length of the line counts only where the address ends in it */
	if (p->phase == TG_PH_PARAMS ||
	    (p->phase == TG_PH_ADDR && p->line_len - p->cr <= TG_LINE_MAX &&
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

/*
 * The MAIL line in progress names its sender already: the address has
 * ended, and whatever follows is ESMTP parameters, which do not change
 * it. Returns the event its end will give (TG_CMD_MAIL or
 * TG_CMD_MAIL_NULL, with the keys in p), or 0 while that is not known.
 */
static TG_INLINE int tg_cmd_sender_known(const struct tg_cmd *p)
{
	int ev;

	if (p->mode != TG_MODE_CMD || p->verb != TG_VERB_MAIL ||
	    p->phase != TG_PH_PARAMS || p->line_len == 0)
		return 0;
	ev = tg_path_end(p);
	return ev == TG_CMD_MAIL_BAD ? 0 : ev;
}

/* End of a command line. */
static TG_INLINE int tg_cmd_eol(struct tg_cmd *p)
{
	int ev = TG_CMD_LINE;

	if (p->odd) {
		ev = p->odd == 2 ? TG_CMD_CHUNK_BAD : TG_CMD_MAIL_BAD;
	} else if (p->verb == TG_VERB_MAIL) {
		ev = tg_path_end(p);
	} else if (p->verb == TG_VERB_BDAT) {
		if (!tg_bdat_ok(p))
			ev = TG_CMD_CHUNK_BAD;
		else if (p->chunk_left)
			p->mode = TG_MODE_CHUNK;
		else if (p->bflags & TG_BF_LAST)
			p->tx = 0;	/* "BDAT 0 LAST" */
	} else if (p->verb == TG_VERB_RSET || p->verb == TG_VERB_EHLO ||
		   p->verb == TG_VERB_HELO || p->verb == TG_VERB_QUIT) {
		p->tx = 0;
	}
	if (ev == TG_CMD_MAIL || ev == TG_CMD_MAIL_NULL ||
	    ev == TG_CMD_MAIL_BAD)
		p->tx = 1;
	if (ev == TG_CMD_CHUNK_BAD)
		p->chunk_left = 0;
	if (ev != TG_CMD_MAIL && ev != TG_CMD_MAIL_NULL) {
		p->addr_key = p->domain_key = 0;
		p->srs = 0;
		p->idn = 0;
	}
	if (ev == TG_CMD_MAIL && !(p->aflags & TG_AF_DOMAIN))
		p->srs = 0;	/* "SRS0=x" without a domain is not SRS */
	/* Keep verb and keys for the caller; the next byte starts afresh. */
	p->phase = TG_PH_START;
	p->line_len = 0;
	return ev;
}

/* The verb so far is a prefix of BDAT (and the line may be one). */
static TG_INLINE int tg_cmd_bdat_prefix(const struct tg_cmd *p)
{
	__u64 m = TG_VERB_BDAT;

	if (p->phase != TG_PH_VERB || p->verb_len > 4)
		return 0;
	m &= (1ULL << (8 * (p->verb_len & 7))) - 1;
	return p->verb == m;
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

/*
 * One byte of a DATA body. The body ends where every server ends it:
 * CR LF "." CR LF, or "." CR LF as the first line. A line that some
 * servers take as the end and others as text gives
 * TG_CMD_BODY_AMBIGUOUS; the parser then reads commands, as the servers
 * that ended the body do.
 */
static TG_INLINE int tg_body_byte(struct tg_cmd *p, unsigned char c)
{
	__u8 st = p->body & ~TG_BODY_BARE, bare = p->body & TG_BODY_BARE;
	int ev;

	if (c == '\n') {
		if (st == TG_BODY_DOT || st == TG_BODY_DOTCRS ||
		    st == TG_BODY_DOTNUL || (st == TG_BODY_DOTCR && bare))
			ev = TG_CMD_BODY_AMBIGUOUS;
		else if (st == TG_BODY_DOTCR)
			ev = TG_CMD_BODY_END;
		else
			ev = TG_CMD_NONE;
		if (ev != TG_CMD_NONE) {
			p->mode = TG_MODE_CMD;
			p->tx = 0;
			tg_cmd_new_line(p);
			return ev;
		}
		p->body = TG_BODY_SOL |
			  (st == TG_BODY_MIDCR ? 0 : TG_BODY_BARE);
		return TG_CMD_NONE;
	}
	if (st == TG_BODY_SOL && c == '.')
		st = TG_BODY_DOT;
	else if (st == TG_BODY_DOT && c == '\r')
		st = TG_BODY_DOTCR;
	else if ((st == TG_BODY_DOTCR || st == TG_BODY_DOTCRS) && c == '\r')
		st = TG_BODY_DOTCRS;
	else if ((st == TG_BODY_DOT && c == 0) || st == TG_BODY_DOTNUL)
		st = TG_BODY_DOTNUL;	/* "." to OpenSMTPD's strcmp() */
	else
		st = c == '\r' ? TG_BODY_MIDCR : TG_BODY_MID;
	/*
	 * TG_BODY_BARE is read only on a line that starts with "."; inside
	 * any other it is dropped, so that the state after a line's bytes
	 * depends on its last two only (tg_bwords_end()).
	 */
	p->body = st == TG_BODY_MID || st == TG_BODY_MIDCR ? st : st | bare;
	return TG_CMD_NONE;
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
		if (p->bflags & TG_BF_LAST)
			p->tx = 0;
		tg_cmd_new_line(p);
		return TG_CMD_CHUNK_END;
	}
	if (p->mode == TG_MODE_BODY)
		return tg_body_byte(p, c);

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
	 * line and does not vouch for it (TG_CMD_MAIL_BAD). The same goes
	 * for a line that may be BDAT ("BDAT\v12" frames a chunk for Postfix,
	 * not for Exim): TG_CMD_CHUNK_BAD.
	 */
	if ((p->phase == TG_PH_START || p->phase == TG_PH_VERB) &&
	    (p->cr || (c < ' ' && c != '\t' && c != '\r')) && !p->odd)
		p->odd = tg_cmd_holding(p) ? 1 : tg_cmd_bdat_prefix(p) ? 2 : 0;
	/* A CR inside a BDAT line: Postfix reads white space, Exim not. */
	if (p->cr && p->phase >= TG_PH_SIZE)
		p->bflags |= TG_BF_BAD;
	p->cr = c == '\r';
	if (c == '\r')
		return TG_CMD_NONE;

	switch (p->phase) {
	case TG_PH_START:
		if (tg_is_space(c))
			return TG_CMD_NONE;
		p->phase = TG_PH_VERB;
		if (p->line_len > 1)
			p->bflags |= TG_BF_LEAD;
		/* fall through */
	case TG_PH_VERB:
		if (tg_is_space(c)) {
			tg_verb_done(p, c);
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
	case TG_PH_SIZE_DIGITS:
	case TG_PH_SIZE_DONE:
		tg_bdat_arg(p, c);
		return TG_CMD_NONE;
	case TG_PH_ARGS:
		return TG_CMD_NONE;
	default:
		tg_mail_arg(p, c);
		return TG_CMD_NONE;
	}
}

#define TG_ONES8	0x0101010101010101ULL
#define TG_HIGH8	0x8080808080808080ULL

/*
 * The bytes of w equal to c, each as its high bit. Exact: no carry or
 * borrow crosses from one byte into the next.
 */
static TG_INLINE __u64 tg_bytes_eq8(__u64 w, unsigned char c)
{
	__u64 x = w ^ (TG_ONES8 * c);

	return ~(((x & ~TG_HIGH8) + ~TG_HIGH8) | x | ~TG_HIGH8);
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tg_body_words() reads byte k of a word as its bits 8k to 8k+7"
#endif

/*
 * Up to eight words of a DATA body at once: nw words at buf, which is a
 * multiple of 8 bytes into the body, read while a line runs or has just
 * started (TG_BODY_MID, TG_BODY_MIDCR or TG_BODY_SOL, the last with or
 * without TG_BODY_BARE). As long as no line in them starts with ".",
 * feeding their bytes to tg_cmd_feed() raises no event, and leaves a
 * state that their last two bytes decide (LF: a line starts, bare unless
 * CR precedes it; CR; other). So only the words with a "." need a closer
 * look, at the byte before each: LF, in the word or at the end of the
 * one before. Returns how many of the words were taken so, from the
 * first, with p->body as feeding them would leave it; the caller feeds
 * the next word byte by byte. Words are read as a little-endian machine
 * loads them (byte k: bits 8k to 8k+7); tests/unit/test_skip.c checks
 * this against tg_cmd_feed(). The steps (tg_bwords_start(),
 * tg_bwords_take() for each word, tg_bwords_end() when one was taken)
 * serve a caller that reads its words elsewhere.
 */
/*
 * The last word taken; before the first, a word whose last byte is the
 * state's: LF (a line starts), CR or neither.
 */
struct tg_bwords {
	__u64 last;
};

#define TG_DOTS8	(TG_ONES8 * '.')

/* The words start from p's state: 0 when it is not one they run in. */
static TG_INLINE int tg_bwords_start(const struct tg_cmd *p,
				     struct tg_bwords *s)
{
	__u8 st = p->body & ~TG_BODY_BARE;

	if (p->mode != TG_MODE_BODY ||
	    (st != TG_BODY_MID && st != TG_BODY_MIDCR && st != TG_BODY_SOL))
		return 0;
	s->last = (__u64)(st == TG_BODY_SOL ? '\n' :
			  st == TG_BODY_MIDCR ? '\r' : 0) << 56;
	return 1;
}

/*
 * 1 when x, a word XORed with TG_DOTS8, had a "." (a zero byte now):
 * (x - 1) & ~x has the high bit of some byte set exactly then.
 */
static TG_INLINE __u64 tg_had_dot(__u64 x)
{
	return (x - TG_ONES8) & ~x & TG_HIGH8;
}

/*
 * One word: 1 when taken, 0 when a line in it starts with ".". A word
 * with no "." (most words of a body) costs one test.
 */
static TG_INLINE int tg_bwords_take(struct tg_bwords *s, __u64 w)
{
	__u64 after_nl;

	if (tg_had_dot(w ^ TG_DOTS8)) {
		after_nl = (s->last >> 56) == '\n';
		if ((tg_bytes_eq8(w, '\n') << 8 | after_nl << 7) &
		    tg_bytes_eq8(w, '.'))
			return 0;
	}
	s->last = w;
	return 1;
}

/*
 * Two words, w then w2: how many were taken (2, or where a line in one
 * of them starts with "."). A pair with no "." is taken by one test, as
 * tg_body_run() reads a body.
 */
static TG_INLINE __u32 tg_bwords_take2(struct tg_bwords *s, __u64 w, __u64 w2)
{
	if (!(tg_had_dot(w ^ TG_DOTS8) | tg_had_dot(w2 ^ TG_DOTS8))) {
		s->last = w2;
		return 2;
	}
	if (!tg_bwords_take(s, w))
		return 0;
	return tg_bwords_take(s, w2) ? 2 : 1;
}

/* Words were taken: p->body as feeding them would leave it. */
static TG_INLINE void tg_bwords_end(struct tg_cmd *p, const struct tg_bwords *s)
{
	unsigned char c7 = s->last >> 56, c6 = s->last >> 48;

	p->body = c7 == '\n' ? TG_BODY_SOL | (c6 == '\r' ? 0 : TG_BODY_BARE) :
		  c7 == '\r' ? TG_BODY_MIDCR : TG_BODY_MID;
}

static TG_INLINE __u32 tg_body_words(struct tg_cmd *p, const unsigned char *buf,
				     __u32 nw)
{
	struct tg_bwords s;
	__u64 w;
	__u32 k;

	if (!tg_bwords_start(p, &s))
		return 0;
	for (k = 0; k < 8; k++) {
		if (k >= nw)
			break;
		__builtin_memcpy(&w, buf + 8 * k, 8);
		if (!tg_bwords_take(&s, w))
			break;
	}
	if (k > 0)
		tg_bwords_end(p, &s);
	return k;
}

static TG_INLINE void tg_reply_init(struct tg_reply *r)
{
	__builtin_memset(r, 0, sizeof(*r));
	r->new_reply = 1;
}

/* The class of the last reply: 2 for 2xx, 3 for 3xx... */
static TG_INLINE int tg_reply_class(const struct tg_reply *r)
{
	return r->code / 100;
}

/*
 * The last reply answered DATA: does the client send the body? Postfix
 * (code / 100 == 3) and Exim (first digit '3') send it after any 3xx,
 * not only 354; OpenSMTPD after a 2xx too.
 */
static TG_INLINE int tg_reply_data(const struct tg_reply *r)
{
	int k = tg_reply_class(r);

	return k == 3 ? TG_DATA_BODY : k == 2 ? TG_DATA_UNSURE : TG_DATA_NONE;
}

/* isspace() in the C locale, less LF (which ends the line). */
static TG_INLINE int tg_reply_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r';
}

/* One byte of the first word after the code ("250-STARTTLS"). */
static TG_INLINE void tg_reply_word(struct tg_reply *r, unsigned char c)
{
	if (r->word_len >= 9)
		return;
	if (c == ' ' || c == '\t') {
		/* 0x10: the word ended at white space */
		if (r->word_len)
			r->word_len |= 0x10;
	} else if (r->word_len < 8) {
		r->word |= (__u64)tg_upper(c) << (8 * (r->word_len & 7));
		r->word_len++;
	} else {
		r->word_len = 9;
	}
}

/*
 * The line of n bytes (LF excluded) has ended. Postfix, Exim and
 * OpenSMTPD read it as the manual page above says; returns the event.
 */
static TG_INLINE int tg_reply_eol(struct tg_reply *r, __u32 n)
{
	__u8 f = r->lflags;
	int ev, klass = '0' + r->code / 100;

	if (n < 3 || r->bad) {
		/* Postfix: part of the reply; Exim, OpenSMTPD: abort */
		ev = TG_REPLY_BAD;
	} else if (n > 3 && r->sep == '-') {
		ev = TG_REPLY_CONT;
		if (r->new_reply)
			r->first = (__u8)klass;
	} else if (n == 3 || r->sep == ' ' || r->sep == 0 ||
		   (!(f & TG_RL_NOTCR) && n <= TG_REPLY_LINE)) {
		/*
		 * The end of the reply for all three. Exim and OpenSMTPD
		 * take its class from its first line, Postfix from this one.
		 */
		ev = r->first && r->first != klass ? TG_REPLY_AMBIGUOUS :
						       TG_REPLY_FINAL;
		r->new_reply = 1;
		return ev;
	} else if (!(f & TG_RL_NOTWS) ||
		   (klass >= '2' && klass <= '5' &&
		    n - r->cr < TG_REPLY_LINE)) {
		/*
		 * Postfix: garbage, the reply goes on. Exim strips trailing
		 * white space and sees "250"; OpenSMTPD ends a reply at
		 * three digits 2..5 and anything other than '-'.
		 */
		ev = TG_REPLY_AMBIGUOUS;
	} else {
		ev = TG_REPLY_BAD;
	}
	r->new_reply = 0;
	return ev;
}

static TG_INLINE int tg_reply_feed(struct tg_reply *r, unsigned char c)
{
	__u32 n = r->line_len;
	int ev;

	if (n == 0) {
		if (r->new_reply)
			r->starttls = r->chunking = r->first = 0;
		r->code = 0;
		r->sep = 0;
		r->bad = 0;
		r->word = 0;
		r->word_len = 0;
		r->lflags = 0;
	}
	if (c == '\n') {
		if ((r->word_len & ~0x10) == 8 && r->word == TG_VERB_STARTTLS)
			r->starttls = 1;
		if ((r->word_len & ~0x10) == 8 && r->word == TG_WORD_CHUNKING)
			r->chunking = 1;
		ev = tg_reply_eol(r, n);
		r->line_len = 0;
		r->cr = 0;
		return ev;
	}
	if (n < 0xffffffffU)
		r->line_len = n + 1;
	if (n < 3) {
		if (c >= '0' && c <= '9')
			r->code = r->code * 10 + (c - '0');
		else
			r->bad = 1;
	} else {
		if (n == 3)
			r->sep = c;
		if (c != '\r')
			r->lflags |= TG_RL_NOTCR;
		if (!tg_reply_ws(c))
			r->lflags |= TG_RL_NOTWS;
	}
	/*
	 * The keyword: CRs before the LF are not part of the line (Postfix
	 * drops them, Exim drops trailing white space); any other CR is a
	 * byte of it ("START\rTLS" is not STARTTLS).
	 */
	if (n >= 4 && c != '\r') {
		/* a CR inside the word: no keyword has one */
		if (r->cr && n >= 5 && r->word_len < 9)
			r->word_len = 9;
		tg_reply_word(r, c);
	}
	r->cr = c == '\r';
	return TG_REPLY_NONE;
}

/*
 * The len bytes at buf (then zeros, up to max, a multiple of 8) hold one
 * LF, their last byte: found from words, not byte by byte. Only the
 * words that hold those bytes are read: the zeros after them hold none.
 */
static TG_INLINE int tg_lf_last(const unsigned char *buf, __u32 len,
				__u32 max)
{
	__u64 w, want;
	__u32 k, last = len - 1;

	for (k = 0; k < max / 8; k++) {
		if (8 * k >= len)
			break;
		__builtin_memcpy(&w, buf + 8 * k, 8);
		want = k == last / 8 ? 0x80ULL << (8 * (last % 8)) : 0;
		if (tg_bytes_eq8(w, '\n') != want)
			return 0;
	}
	return 1;
}

/*
 * A reply that is a whole segment of its own, one line: three digits, a
 * space, text and an LF at the end, none before it ("250 2.1.0 Ok\r\n").
 * Most replies come so. Fed byte by byte, such a line, begun where a new
 * reply is due, raises TG_REPLY_FINAL at its LF whatever its text, and
 * leaves r at the start of the next reply with its code; tg_reply_line()
 * does that at once, from words. It does not read the text's keyword:
 * r->starttls and r->chunking are left 0, so the caller must not use it
 * for the reply to EHLO. buf holds TG_RLINE_MAX bytes: the segment's len
 * bytes, then zeros. Returns 1 when the segment was taken so, else 0 (r
 * untouched: feed it byte by byte). tests/unit/test_skip.c checks it
 * against tg_reply_feed().
 */
#define TG_RLINE_MAX	64

static TG_INLINE int tg_reply_line(struct tg_reply *r, const unsigned char *buf,
				   __u32 len)
{
	__u32 k;

	if (r->line_len || !r->new_reply || len < 5 || len > TG_RLINE_MAX)
		return 0;
	for (k = 0; k < 3; k++)
		if (buf[k] < '0' || buf[k] > '9')
			return 0;
	if (buf[3] != ' ' || !tg_lf_last(buf, len, TG_RLINE_MAX))
		return 0;
	r->code = (__u16)((buf[0] - '0') * 100 + (buf[1] - '0') * 10 +
			  (buf[2] - '0'));
	r->sep = ' ';
	r->bad = 0;
	r->starttls = 0;
	r->chunking = 0;
	r->first = 0;
	r->word = 0;
	r->word_len = 0;
	r->lflags = 0;
	r->line_len = 0;
	r->cr = 0;
	r->new_reply = 1;
	return 1;
}

/*
 * A write that is one whole command line, begun at a line start, whose
 * verb is four letters other than MAIL and BDAT, then a space (or CR LF
 * at once): "RCPT TO:<a@b>\r\n", "DATA\r\n", "EHLO host\r\n". Fed byte by
 * byte, what follows such a verb is not read but for the CR before the
 * LF, and the line raises TG_CMD_LINE at its LF; tg_cmd_line() does that
 * at once and leaves p as feeding would, up to what the next line
 * resets (an RCPT path that p->rcpt_paths has read gives nothing
 * either). buf holds TG_CLINE_MAX bytes: the write's len bytes, then
 * zeros. Returns 1 when the line was taken so (p->verb, p->cr and p->tx
 * as after its LF), else 0 (p untouched). tests/unit/test_skip.c checks
 * it against tg_cmd_feed().
 */
#define TG_CLINE_MAX	128

static TG_INLINE int tg_cmd_line(struct tg_cmd *p, const unsigned char *buf,
				 __u32 len)
{
	__u64 verb = 0;
	__u32 k;
	unsigned char c;

	if (p->mode != TG_MODE_CMD || p->line_len || len < 6 ||
	    len > TG_CLINE_MAX)
		return 0;
	for (k = 0; k < 4; k++) {
		c = buf[k];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
			return 0;
		verb |= (__u64)tg_upper(c) << (8 * k);
	}
	if (verb == TG_VERB_MAIL || verb == TG_VERB_BDAT)
		return 0;
	if (buf[4] != ' ' && !(buf[4] == '\r' && len == 6))
		return 0;
	if (!tg_lf_last(buf, len, TG_CLINE_MAX))
		return 0;
	tg_cmd_new_line(p);
	p->verb = verb;
	p->verb_len = 4;
	p->phase = TG_PH_START;
	p->addr_key = 0;
	p->cr = buf[(len - 2) & (TG_CLINE_MAX - 1)] == '\r';
	if (verb == TG_VERB_RSET || verb == TG_VERB_EHLO ||
	    verb == TG_VERB_HELO || verb == TG_VERB_QUIT)
		p->tx = 0;
	return 1;
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
		*srs = ((p.aflags & TG_AF_DOMAIN) ? tg_cmd_srs(&p) : 0) |
		       tg_cmd_idn(&p);
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
