// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	fuzz_tls - libFuzzer target for the TLS ServerHello parser and the
 *	client record framer
 * SYNOPSIS
 *	build/fuzz/fuzz_tls [libFuzzer options] [corpus or input...]
 * DESCRIPTION
 *	Runs tg_tls_feed() (the server's first flight) and
 *	tg_tls_client_feed() (what a client writes) of include/tg_tls.h over
 *	the same bytes, each in one piece and in pieces (cut points derived
 *	from the bytes, the state moving between heap blocks at each cut),
 *	and checks:
 * .IP "split invariance"
 *	the same event at the same byte, however the bytes are cut.
 * .IP "reference ServerHello parser"
 *	written plainly here over the whole buffer: records checked (types
 *	handshake, alert and ChangeCipherSpec, major version 3; empty
 *	handshake and ChangeCipherSpec records skipped, a ChangeCipherSpec
 *	with a body or an empty alert refused; an alert ends the flight when
 *	fatal or close_notify and is skipped otherwise) and handshake bodies
 *	reassembled, empty HelloRequests skipped, then the ServerHello
 *	parsed field by field once all of it is there, following the
 *	contract in tg_tls.h
 *	(session id at most 32, an extensions block that is absent or adds
 *	up exactly, supported_versions present at most once and two bytes
 *	long, selecting TLS 1.3 or above; without it, legacy_version at most
 *	TLS 1.2; a ServerHello of 38 to 65535 bytes). The parser must give
 *	TG_TLS_VERSION exactly when the reference does, with the same
 *	version and cipher, so that it never calls a flow TLS >= 1.2 unless
 *	a well-formed ServerHello said so; an alert the same alert; and BAD
 *	whenever the reference says BAD. The parser may say BAD before the
 *	reference can (it checks fields as they arrive); it may not say
 *	anything else. After its event it stays done (TG_TLS_NONE).
 * .IP "reference record framer"
 *	tg_tls_client_feed() says TG_TLS_BAD at the first byte that is not
 *	a record header (type 20..23, major version 3, length 1..16384+2048)
 *	at a record boundary, and nowhere else.
 * .PP
 *	Input: a first byte 0x14..0x17 (a record type) starts raw mode: the
 *	whole input is the byte stream. Any other first byte picks a real
 *	ServerHello captured by tests/e2e/suites/tls_selftest.py
 *	(tests/unit/data/serverhello_tls1*.hex, built in) and the rest of the
 *	input is a list of 3-byte edits to it: versions, cipher, session id,
 *	supported_versions added, removed or duplicated, extension, block,
 *	handshake and record lengths off by some bytes, the message cut into
 *	several records, alert (any level), CCS, HelloRequest, empty or
 *	other records slipped in, trailing
 *	bytes, flipped bytes. This reaches deep into the ServerHello, which
 *	random bytes rarely do.
 * DIAGNOSTICS
 *	A failed check prints the bytes, the reference's verdict and the
 *	parser's, then aborts (libFuzzer saves the input).
 */
#include "tg_tls.h"
#include "fuzz_common.h"
#include "serverhello_data.h"	/* generated: fz_captures[] */

#include <stdint.h>

#define MAX_IN 65536

struct res {
	int ev;			/* TG_TLS_* */
	__u16 version;
	__u16 cipher;
	__u8 alert;
	size_t at;		/* byte of the event (parser only) */
};

static const char *tname(int ev)
{
	switch (ev) {
	case TG_TLS_NONE:
		return "NONE";
	case TG_TLS_VERSION:
		return "VERSION";
	case TG_TLS_ALERT:
		return "ALERT";
	case TG_TLS_BAD:
		return "BAD";
	}
	return "?";
}

static struct res mk(int ev)
{
	struct res r = { ev, 0, 0, 0, 0 };

	return r;
}

/* ------------------------------------------------------------------ */
/* Reference ServerHello parser                                        */

static unsigned u16at(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

/* A complete ServerHello body of L bytes. */
static struct res ref_server_hello(const unsigned char *b, size_t L)
{
	size_t p = 0, sid, elen, dlen;
	unsigned legacy, cipher, type, sv = 0;
	int sv_seen = 0;
	struct res r;

#define NEED(k) \
	do { if (L - p < (size_t)(k)) return mk(TG_TLS_BAD); } while (0)
	NEED(2);
	legacy = u16at(b);
	p = 2;
	NEED(32);
	p += 32;
	NEED(1);
	sid = b[p++];
	if (sid > 32)
		return mk(TG_TLS_BAD);
	NEED(sid);
	p += sid;
	NEED(2);
	cipher = u16at(b + p);
	p += 2;
	NEED(1);
	p++;			/* compression method: not judged */
	if (p < L) {		/* an extensions block */
		NEED(2);
		elen = u16at(b + p);
		p += 2;
		if (elen != L - p)
			return mk(TG_TLS_BAD);
		while (p < L) {
			NEED(4);
			type = u16at(b + p);
			dlen = u16at(b + p + 2);
			p += 4;
			NEED(dlen);
			if (type == TG_TLS_EXT_SUPPORTED_VERSIONS) {
				if (dlen != 2 || sv_seen)
					return mk(TG_TLS_BAD);
				sv_seen = 1;
				sv = u16at(b + p);
			}
			p += dlen;
		}
	}
#undef NEED
	if (sv_seen && sv < TG_TLS_1_3)
		return mk(TG_TLS_BAD);
	if (!sv_seen && legacy > TG_TLS_1_2)
		return mk(TG_TLS_BAD);
	r = mk(TG_TLS_VERSION);
	r.version = (__u16)(sv_seen ? sv : legacy);
	r.cipher = (__u16)cipher;
	return r;
}

/*
 * The handshake bytes so far: NONE while the ServerHello is incomplete.
 * Empty HelloRequests before it are skipped (OpenSSL's client does).
 */
static struct res ref_handshake(const unsigned char *h, size_t n)
{
	size_t L, off = 0;

	for (;;) {
		if (n - off < 1)
			return mk(TG_TLS_NONE);
		if (h[off] != TG_TLS_HS_SERVER_HELLO &&
		    h[off] != TG_TLS_HS_HELLO_REQUEST)
			return mk(TG_TLS_BAD);
		if (n - off < 4)
			return mk(TG_TLS_NONE);
		L = (size_t)h[off + 1] << 16 | (size_t)h[off + 2] << 8 |
		    h[off + 3];
		if (h[off] == TG_TLS_HS_SERVER_HELLO)
			break;
		if (L != 0)
			return mk(TG_TLS_BAD);
		off += 4;
	}
	if (L < 38 || L > 65535)
		return mk(TG_TLS_BAD);
	if (n - off < 4 + L)
		return mk(TG_TLS_NONE);
	return ref_server_hello(h + off + 4, L);
}

static struct res ref_tls(const unsigned char *s, size_t n)
{
	static unsigned char hs[MAX_IN];
	size_t off = 0, hn = 0;

	while (off < n) {
		size_t avail = n - off, len, blen;
		const unsigned char *body;
		struct res r;

		if (s[off] != TG_TLS_CT_HANDSHAKE && s[off] != TG_TLS_CT_ALERT &&
		    s[off] != TG_TLS_CT_CCS)
			return mk(TG_TLS_BAD);
		if (avail < 2)
			return mk(TG_TLS_NONE);
		if (s[off + 1] != 3)
			return mk(TG_TLS_BAD);
		if (avail < 5)
			return mk(TG_TLS_NONE);
		len = u16at(s + off + 3);
		if (len > TG_TLS_REC_MAX)
			return mk(TG_TLS_BAD);
		/* empty handshake and CCS records are skipped */
		if (len == 0 && s[off] == TG_TLS_CT_ALERT)
			return mk(TG_TLS_BAD);
		if (len != 0 && s[off] == TG_TLS_CT_CCS)
			return mk(TG_TLS_BAD);
		body = s + off + 5;
		blen = len < avail - 5 ? len : avail - 5;
		if (s[off] == TG_TLS_CT_ALERT) {
			if (len == 1)	/* level without description */
				return mk(blen == 1 ? TG_TLS_BAD : TG_TLS_NONE);
			if (blen < 2)
				return mk(TG_TLS_NONE);
			/* fatal or close_notify: the end; others are skipped */
			if (body[0] == 2 || body[1] == 0) {
				r = mk(TG_TLS_ALERT);
				r.alert = body[1];
				return r;
			}
			off += 5 + len;
			continue;
		}
		memcpy(hs + hn, body, blen);
		hn += blen;
		r = ref_handshake(hs, hn);
		if (r.ev != TG_TLS_NONE)
			return r;
		off += 5 + len;
	}
	return mk(TG_TLS_NONE);
}

/* First byte the client framer must refuse; n if none. */
static size_t ref_client_bad(const unsigned char *s, size_t n)
{
	size_t off = 0, len;

	while (off < n) {
		if (s[off] < TG_TLS_CT_CCS || s[off] > TG_TLS_CT_APPDATA)
			return off;
		if (off + 1 >= n)
			return n;
		if (s[off + 1] != 3)
			return off + 1;
		if (off + 4 >= n)
			return n;
		len = u16at(s + off + 3);
		if (len == 0 || len > TG_TLS_REC_MAX)
			return off + 4;
		off += 5 + len;
	}
	return n;
}

/* ------------------------------------------------------------------ */
/* Running the parsers                                                 */

static struct res run_server(const unsigned char *s, size_t n,
			     const size_t *cuts, size_t ncuts)
{
	struct tg_tls *t = malloc(sizeof(*t));
	struct res r = mk(TG_TLS_NONE);
	size_t i, k = 0;

	if (!t)
		abort();
	tg_tls_init(t);
	for (i = 0; i < n; i++) {
		int ev;

		if (k < ncuts && cuts[k] == i) {
			t = fz_move_state(t, sizeof(*t));
			k++;
		}
		ev = tg_tls_feed(t, s[i]);
		if (ev == TG_TLS_NONE)
			continue;
		FUZZ_CHECK(r.ev == TG_TLS_NONE,
			   "bytes \"%s\": a second event %s at %zu after %s "
			   "at %zu", fz_esc(s, n), tname(ev), i, tname(r.ev),
			   r.at);
		r.ev = ev;
		r.at = i;
		r.version = t->version;
		r.cipher = t->cipher;
		r.alert = t->alert;
	}
	free(t);
	return r;
}

static size_t run_client(const unsigned char *s, size_t n, const size_t *cuts,
			 size_t ncuts)
{
	struct tg_tls_client *c = malloc(sizeof(*c));
	size_t i, k = 0;

	if (!c)
		abort();
	memset(c, 0, sizeof(*c));
	for (i = 0; i < n; i++) {
		if (k < ncuts && cuts[k] == i) {
			c = fz_move_state(c, sizeof(*c));
			k++;
		}
		if (tg_tls_client_feed(c, s[i]) == TG_TLS_BAD)
			break;	/* the data path stops here */
	}
	free(c);
	return i;
}

static void check_bytes(const unsigned char *s, size_t n)
{
	static size_t cuts[MAX_IN];
	struct res p = run_server(s, n, NULL, 0), q, r = ref_tls(s, n);
	size_t nc, cbad, cref;
	int many, ok;

	switch (r.ev) {
	case TG_TLS_VERSION:
		ok = p.ev == TG_TLS_VERSION && p.version == r.version &&
		     p.cipher == r.cipher;
		break;
	case TG_TLS_ALERT:
		ok = (p.ev == TG_TLS_ALERT && p.alert == r.alert) ||
		     p.ev == TG_TLS_BAD;
		break;
	case TG_TLS_BAD:
		ok = p.ev == TG_TLS_BAD;
		break;
	default:
		ok = p.ev == TG_TLS_NONE || p.ev == TG_TLS_BAD;
	}
	if (!ok)
		FUZZ_FAIL("bytes \"%s\": tg_tls_feed() gives %s at %zu "
			  "(version %#06x cipher %#06x alert %u), the "
			  "reference %s (version %#06x cipher %#06x alert %u)"
			  "%s",
			  fz_esc(s, n), tname(p.ev), p.at, p.version, p.cipher,
			  p.alert, tname(r.ev), r.version, r.cipher, r.alert,
			  p.ev == TG_TLS_VERSION && p.version >= TG_TLS_1_2 ?
				  ": the flow would count as TLS >= 1.2" : "");

	cref = ref_client_bad(s, n);
	cbad = run_client(s, n, NULL, 0);
	FUZZ_CHECK(cbad == cref,
		   "bytes \"%s\": tg_tls_client_feed() refuses byte %zu, the "
		   "reference byte %zu (%zu means none)",
		   fz_esc(s, n), cbad, cref, n);

	for (many = 0; many < 2; many++) {
		nc = fz_cuts(s, n, 0x5eed, many, cuts, FZ_NELEM(cuts));
		q = run_server(s, n, cuts, nc);
		FUZZ_CHECK(q.ev == p.ev && q.at == p.at &&
				   q.version == p.version &&
				   q.cipher == p.cipher && q.alert == p.alert,
			   "bytes \"%s\" cut in %zu pieces: %s at %zu "
			   "(%#06x/%#06x/%u), in one piece %s at %zu "
			   "(%#06x/%#06x/%u)",
			   fz_esc(s, n), nc + 1, tname(q.ev), q.at, q.version,
			   q.cipher, q.alert, tname(p.ev), p.at, p.version,
			   p.cipher, p.alert);
		FUZZ_CHECK(run_client(s, n, cuts, nc) == cbad,
			   "bytes \"%s\" cut in %zu pieces: client framer "
			   "refuses another byte than in one piece (%zu)",
			   fz_esc(s, n), nc + 1, cbad);
	}
}

/* ------------------------------------------------------------------ */
/* Structure-aware mode: edits to a captured ServerHello               */

#define MAX_EXT		16
#define MAX_EXT_DATA	512
#define MAX_FRAG	8
#define MAX_EXTRA	4
#define MAX_FLIP	8

struct ext {
	__u16 type;
	__u16 dlen;			/* bytes of data */
	int dlen_delta;			/* added to the length written */
	unsigned char data[MAX_EXT_DATA];
};

struct extra_rec {
	size_t before_frag;		/* goes before this fragment */
	unsigned char type;
	unsigned char body[4];
	size_t len;			/* 0 to 4 */
};

struct sh {
	unsigned char rec_major, rec_minor;
	unsigned char hs_type;
	int hs_len_delta;
	__u16 legacy;
	unsigned char random[32];
	unsigned sid_len;		/* bytes of session id */
	int sid_decl;			/* length written, -1: sid_len */
	unsigned char sid[64];
	__u16 cipher;
	unsigned char comp;
	int has_ext;
	int ext_len_delta;
	int next;
	struct ext ext[MAX_EXT];
	size_t ncut;
	size_t cut[MAX_FRAG];		/* raw positions, reduced later */
	size_t nextra;
	struct extra_rec extra[MAX_EXTRA];
	int rec_delta_frag, rec_delta;
	size_t ntrail;
	unsigned char trail[8];
	size_t nflip;
	size_t flip_at[MAX_FLIP];
	unsigned char flip_x[MAX_FLIP];
};

static struct sh captured[8];
static size_t ncaptured;

/* A capture: one or more handshake records holding one ServerHello. */
static int parse_capture(const unsigned char *s, size_t n, struct sh *h)
{
	static unsigned char hs[MAX_IN];
	size_t off = 0, hn = 0, L, p, elen, end;

	memset(h, 0, sizeof(*h));
	h->sid_decl = -1;
	h->rec_delta_frag = -1;
	while (off + 5 <= n) {
		size_t len = u16at(s + off + 3);

		if (s[off] != TG_TLS_CT_HANDSHAKE || off + 5 + len > n)
			return 0;
		h->rec_major = s[off + 1];
		h->rec_minor = s[off + 2];
		memcpy(hs + hn, s + off + 5, len);
		hn += len;
		off += 5 + len;
	}
	if (off != n || hn < 4 || hs[0] != TG_TLS_HS_SERVER_HELLO)
		return 0;
	h->hs_type = hs[0];
	L = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
	if (L + 4 != hn || L < 38)
		return 0;
	p = 4;
	h->legacy = (__u16)u16at(hs + p);
	p += 2;
	memcpy(h->random, hs + p, 32);
	p += 32;
	h->sid_len = hs[p++];
	if (h->sid_len > 32)
		return 0;
	memcpy(h->sid, hs + p, h->sid_len);
	p += h->sid_len;
	h->cipher = (__u16)u16at(hs + p);
	p += 2;
	h->comp = hs[p++];
	if (p == hn)
		return 1;
	h->has_ext = 1;
	elen = u16at(hs + p);
	p += 2;
	end = p + elen;
	if (end != hn)
		return 0;
	while (p + 4 <= end && h->next < MAX_EXT) {
		struct ext *e = &h->ext[h->next++];

		e->type = (__u16)u16at(hs + p);
		e->dlen = (__u16)u16at(hs + p + 2);
		p += 4;
		if (e->dlen > MAX_EXT_DATA || p + e->dlen > end)
			return 0;
		memcpy(e->data, hs + p, e->dlen);
		p += e->dlen;
	}
	return p == end;
}

static size_t put16(unsigned char *o, long v)
{
	if (v < 0)
		v = 0;
	if (v > 0xffff)
		v = 0xffff;
	o[0] = (unsigned char)(v >> 8);
	o[1] = (unsigned char)v;
	return 2;
}

static int cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

/* Writes the edited flight; returns its length (at most cap). */
static size_t serialize(const struct sh *h, unsigned char *o, size_t cap)
{
	static unsigned char msg[8192];
	size_t body, m = 4, i, k, n = 0, nfrag = 0, at = 0;
	size_t frag_end[MAX_FRAG + 1];
	long L, elen = 0;

	m += put16(msg + m, h->legacy);
	memcpy(msg + m, h->random, 32);
	m += 32;
	msg[m++] = (unsigned char)(h->sid_decl >= 0 ? h->sid_decl : (int)h->sid_len);
	memcpy(msg + m, h->sid, h->sid_len);
	m += h->sid_len;
	m += put16(msg + m, h->cipher);
	msg[m++] = h->comp;
	if (h->has_ext) {
		for (i = 0; i < (size_t)h->next; i++)
			elen += 4 + h->ext[i].dlen;
		m += put16(msg + m, elen + h->ext_len_delta);
		for (i = 0; i < (size_t)h->next; i++) {
			const struct ext *e = &h->ext[i];

			m += put16(msg + m, e->type);
			m += put16(msg + m, (long)e->dlen + e->dlen_delta);
			memcpy(msg + m, e->data, e->dlen);
			m += e->dlen;
		}
	}
	body = m - 4;
	L = (long)body + h->hs_len_delta;
	if (L < 0)
		L = 0;
	msg[0] = h->hs_type;
	msg[1] = (unsigned char)(L >> 16);
	msg[2] = (unsigned char)(L >> 8);
	msg[3] = (unsigned char)L;

	/* Fragments: cut points reduced into (0, m), sorted, unique. */
	{
		size_t c[MAX_FRAG];

		for (i = 0; i < h->ncut; i++)
			c[i] = m > 1 ? 1 + h->cut[i] % (m - 1) : 0;
		qsort(c, h->ncut, sizeof(c[0]), cmp_size);
		for (i = 0; i < h->ncut; i++)
			if (c[i] > 0 && (nfrag == 0 || c[i] != frag_end[nfrag - 1]))
				frag_end[nfrag++] = c[i];
		frag_end[nfrag++] = m;
	}
	for (k = 0; k <= nfrag; k++) {
		for (i = 0; i < h->nextra; i++) {
			const struct extra_rec *x = &h->extra[i];

			if (x->before_frag != k &&
			    !(k == nfrag && x->before_frag > nfrag))
				continue;
			o[n++] = x->type;
			o[n++] = h->rec_major;
			o[n++] = h->rec_minor;
			n += put16(o + n, (long)x->len);
			memcpy(o + n, x->body, x->len);
			n += x->len;
		}
		if (k == nfrag)
			break;
		o[n++] = TG_TLS_CT_HANDSHAKE;
		o[n++] = h->rec_major;
		o[n++] = h->rec_minor;
		n += put16(o + n, (long)(frag_end[k] - at) +
				  ((int)k == h->rec_delta_frag ? h->rec_delta : 0));
		memcpy(o + n, msg + at, frag_end[k] - at);
		n += frag_end[k] - at;
		at = frag_end[k];
	}
	memcpy(o + n, h->trail, h->ntrail);
	n += h->ntrail;
	for (i = 0; i < h->nflip && n; i++)
		o[h->flip_at[i] % n] ^= h->flip_x[i];
	if (n > cap)
		abort();
	return n;
}

static const __u16 versions[] = {
	TG_TLS_1_3, TG_TLS_1_2, TG_TLS_1_1, TG_TLS_1_0, TG_TLS_SSL3,
	0x0000, 0x0305, 0x7f1c, 0xfefd, 0xffff, 0x0404, 0x0203,
};

static void add_ext(struct sh *h, size_t at, __u16 type, __u16 value)
{
	struct ext *e;

	if (h->next >= MAX_EXT)
		return;
	at %= (size_t)h->next + 1;
	memmove(&h->ext[at + 1], &h->ext[at],
		((size_t)h->next - at) * sizeof(h->ext[0]));
	h->next++;
	e = &h->ext[at];
	memset(e, 0, sizeof(*e));
	e->type = type;
	e->dlen = 2;
	e->data[0] = (unsigned char)(value >> 8);
	e->data[1] = (unsigned char)value;
	h->has_ext = 1;
}

static void edit(struct sh *h, unsigned op, unsigned a, unsigned b)
{
	size_t i;

	switch (op % 16) {
	case 0:
		h->legacy = a >= 0xf0 ? (__u16)(a << 8 | b) :
					versions[a % FZ_NELEM(versions)];
		break;
	case 1:
		h->cipher = (__u16)(a << 8 | b);
		break;
	case 2:
		h->sid_len = a % 33;
		memset(h->sid, (int)b, h->sid_len);
		h->sid_decl = (b & 0x80) ? (int)(a % 40) : -1;
		break;
	case 3:
		add_ext(h, b, TG_TLS_EXT_SUPPORTED_VERSIONS,
			versions[a % FZ_NELEM(versions)]);
		break;
	case 4:
		if (h->next > 0) {
			i = a % (size_t)h->next;
			memmove(&h->ext[i], &h->ext[i + 1],
				((size_t)h->next - i - 1) * sizeof(h->ext[0]));
			h->next--;
		}
		break;
	case 5:
		if (h->next > 0 && h->next < MAX_EXT) {
			i = a % (size_t)h->next;
			memmove(&h->ext[i + 1], &h->ext[i],
				((size_t)h->next - i) * sizeof(h->ext[0]));
			h->next++;
			if (b & 1)	/* a changed copy */
				h->ext[i + 1].data[0] ^= (unsigned char)b;
		}
		break;
	case 6:
		if (h->next > 0)
			h->ext[a % (size_t)h->next].dlen_delta = (signed char)b;
		break;
	case 7:
		h->ext_len_delta = (signed char)a;
		break;
	case 8:
		h->hs_len_delta = (signed char)a;
		break;
	case 9:
		if (a & 1)
			h->has_ext = 0;
		else if (h->next > 0)	/* another type, same data */
			h->ext[a / 2 % (size_t)h->next].type =
				b & 1 ? TG_TLS_EXT_SUPPORTED_VERSIONS :
					(__u16)(a << 8 | b);
		break;
	case 10:
		if (h->ncut < MAX_FRAG)
			h->cut[h->ncut++] = a << 8 | b;
		break;
	case 11:
		if (h->nextra < MAX_EXTRA) {
			static const unsigned char types[] = {
				TG_TLS_CT_ALERT, TG_TLS_CT_CCS,
				TG_TLS_CT_APPDATA, TG_TLS_CT_ALERT, 24,
				TG_TLS_CT_HANDSHAKE,
			};
			struct extra_rec *x = &h->extra[h->nextra++];

			x->before_frag = a >> 4;
			x->type = types[a % FZ_NELEM(types)];
			if (x->type == TG_TLS_CT_HANDSHAKE) {
				/* a HelloRequest, or its first half */
				memset(x->body, 0, sizeof(x->body));
				x->body[3] = (unsigned char)(b & 0x80 ? b : 0);
				x->len = (a & 8) ? 2 : 4;
				break;
			}
			/* alerts: fatal, warning, or another level */
			x->body[0] = (b & 0x80) ? ((b & 0x40) ? 3 : 1) :
				     x->type == TG_TLS_CT_CCS ? 1 : 2;
			x->body[1] = (unsigned char)(b & 0x3f);
			x->len = (a & 8) ? ((a & 0x40) ? 0 : 1) : 2;
		}
		break;
	case 12:
		if (a & 1) {
			h->rec_delta_frag = (int)(a >> 1) % 4;
			h->rec_delta = (signed char)b;
		} else {
			h->rec_major = (a & 2) ? (unsigned char)b : 3;
			h->rec_minor = (unsigned char)(a >> 2);
		}
		break;
	case 13:
		if (a & 1)
			h->comp = (unsigned char)b;
		else
			h->hs_type = (unsigned char)b;
		break;
	case 14:
		if (h->ntrail + 2 <= sizeof(h->trail)) {
			h->trail[h->ntrail++] = (unsigned char)a;
			h->trail[h->ntrail++] = (unsigned char)b;
		}
		break;
	default:
		if (h->nflip < MAX_FLIP) {
			h->flip_at[h->nflip] = a << 8 | b;
			h->flip_x[h->nflip++] = (unsigned char)(op | 1);
		}
		break;
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static unsigned char out[MAX_IN];
	size_t i, n;

	(void)argc;
	(void)argv;
	/* Each capture must parse, serialize back to itself, and read as
	 * the version its name says, in the parser and the reference. */
	for (i = 0; i < FZ_NELEM(fz_captures); i++) {
		const struct fz_capture *c = &fz_captures[i];
		struct sh *h = &captured[ncaptured];
		struct res p, r;

		if (!parse_capture(c->bytes, c->len, h) ||
		    (n = serialize(h, out, sizeof(out))) != c->len ||
		    memcmp(out, c->bytes, n)) {
			fprintf(stderr, "fuzz_tls: capture %s does not parse "
				"or serialize back\n", c->name);
			abort();
		}
		p = run_server(c->bytes, c->len, NULL, 0);
		r = ref_tls(c->bytes, c->len);
		if (p.ev != TG_TLS_VERSION || r.ev != TG_TLS_VERSION ||
		    p.version != c->version || r.version != c->version ||
		    p.cipher != r.cipher) {
			fprintf(stderr, "fuzz_tls: capture %s: parser %s %#06x, "
				"reference %s %#06x, expected VERSION %#06x\n",
				c->name, tname(p.ev), p.version, tname(r.ev),
				r.version, c->version);
			abort();
		}
		ncaptured++;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned char out[MAX_IN];
	static struct sh h;
	size_t i, n;

	if (size == 0)
		return 0;
	if (data[0] >= TG_TLS_CT_CCS && data[0] <= TG_TLS_CT_APPDATA) {
		check_bytes(data, size > MAX_IN ? MAX_IN : size);
		return 0;
	}
	h = captured[data[0] % ncaptured];
	for (i = 1; i + 3 <= size && i < 1 + 3 * 64; i += 3)
		edit(&h, data[i], data[i + 1], data[i + 2]);
	n = serialize(&h, out, sizeof(out));
	check_bytes(out, n);
	return 0;
}
