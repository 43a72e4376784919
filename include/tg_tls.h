/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_tls - incremental TLS record and ServerHello parser, one source
 *	for the BPF programs, the agent and the native tests
 * SYNOPSIS
 *	#include "tg_tls.h"
 *
 *	void	tg_tls_init(struct tg_tls *t);
 *	int	tg_tls_feed(struct tg_tls *t, unsigned char c);
 * DESCRIPTION
 *	tg_tls_feed() reads what a TLS server sends from the start of the
 *	handshake, one byte at a time, and reports what the handshake
 *	negotiated:
 * .IP TG_TLS_VERSION
 *	the ServerHello was read whole and is well formed: t->version is the
 *	negotiated version (the supported_versions extension when present, as
 *	TLS 1.3 sends it, else legacy_version), t->cipher the cipher suite.
 * .IP TG_TLS_ALERT
 *	a fatal alert, or a close_notify, came before the ServerHello:
 *	t->alert holds its description. The handshake failed.
 * .IP TG_TLS_BAD
 *	the bytes are not a TLS server's first flight: a bad record header
 *	(a type other than handshake, alert or ChangeCipherSpec, a major
 *	version other than 3, a length above TG_TLS_REC_MAX, an empty
 *	alert), a ChangeCipherSpec that is not empty, an alert of one byte,
 *	a handshake message other than ServerHello or an empty HelloRequest,
 *	or a ServerHello whose lengths do not add up (session id longer than
 *	32, extensions that overrun or underrun their block, a
 *	supported_versions extension that is not two bytes), or that a
 *	client must refuse (supported_versions below TLS 1.3, or a
 *	legacy_version above TLS 1.2 without it).
 * .PP
 *	The first flight is read as the client libraries read it, so that
 *	BAD and ALERT come only where the client gives up on the handshake
 *	(measured with OpenSSL 3.0.22's client, which Postfix and OpenSMTPD
 *	use, and GnuTLS 3.7.9's, which Exim uses): what a client skips
 *	before the ServerHello is skipped here, where one client skips more
 *	than another the parser skips it too. Skipped: empty HelloRequest
 *	messages (00 00 00 00) anywhere in the handshake stream (OpenSSL),
 *	empty handshake and ChangeCipherSpec records (OpenSSL), alerts of
 *	any level but fatal other than close_notify, and the bytes of an
 *	alert record after its first two (GnuTLS when the application reads
 *	on; OpenSSL skips warnings). Records of any minor version are read
 *	(the client does not check it before the ServerHello). Skipping
 *	more than a client is safe: that client aborts the handshake.
 *	Saying BAD where a client reads on is not: the session goes on,
 *	unjudged.
 * .PP
 *	After one of these events the parser stays done and returns
 *	TG_TLS_NONE. Handshake messages are read across record boundaries,
 *	so a ServerHello split into several records or segments gives the
 *	same result as one that is not.
 *
 *	The parser never says a version was negotiated unless a complete,
 *	consistent ServerHello said so. A server cannot make a client use a
 *	version other than the one in its ServerHello: the client checks the
 *	handshake transcript before it sends application data.
 * DIAGNOSTICS
 *	None; malformed input is reported through TG_TLS_BAD.
 */
#ifndef TG_TLS_H
#define TG_TLS_H

#include "tg_types.h"

#define TG_TLS_NONE	0
#define TG_TLS_VERSION	1
#define TG_TLS_ALERT	2
#define TG_TLS_BAD	3

#define TG_TLS_CT_CCS		20
#define TG_TLS_CT_ALERT		21
#define TG_TLS_CT_HANDSHAKE	22
#define TG_TLS_CT_APPDATA	23

#define TG_TLS_HS_HELLO_REQUEST	0
#define TG_TLS_HS_SERVER_HELLO	2

#define TG_TLS_AL_FATAL		2
#define TG_TLS_AD_CLOSE_NOTIFY	0
#define TG_TLS_EXT_SUPPORTED_VERSIONS 43

#define TG_TLS_SSL3	0x0300
#define TG_TLS_1_0	0x0301
#define TG_TLS_1_1	0x0302
#define TG_TLS_1_2	0x0303
#define TG_TLS_1_3	0x0304

#define TG_TLS_REC_MAX	(16384 + 2048)	/* RFC 5246 6.2.3 */

/* Where in the ServerHello body the parser is. */
enum tg_sh_field {
	TG_SH_VERSION,		/* legacy_version, 2 bytes */
	TG_SH_RANDOM,		/* 32 bytes */
	TG_SH_SID_LEN,
	TG_SH_SID,
	TG_SH_CIPHER,		/* 2 bytes */
	TG_SH_COMPRESSION,	/* 1 byte */
	TG_SH_EXT_LEN,		/* 2 bytes, optional before TLS 1.3 */
	TG_SH_EXT_TYPE,		/* 2 bytes */
	TG_SH_EXT_DLEN,		/* 2 bytes */
	TG_SH_EXT_DATA,
};

struct tg_tls {
	__u32 rec_left;		/* body bytes left in the current record */
	__u32 hs_left;		/* body bytes left in the ServerHello */
	__u32 hs_len;		/* ServerHello body length (being read) */
	__u16 rec_len;		/* record length (being read) */
	__u16 version;		/* negotiated, once known */
	__u16 legacy_version;
	__u16 cipher;
	__u16 ext_left;		/* bytes left in the extensions block */
	__u16 ext_type;
	__u16 ext_dlen;		/* bytes left in the current extension */
	__u16 field_pos;	/* bytes read of the current field */
	__u16 selected;		/* supported_versions, 0 if absent */
	__u16 rec_pos;		/* body bytes read of the current record */
	__u8 rec_hdr;		/* bytes read of the record header, 0..5 */
	__u8 rec_type;
	__u8 hs_hdr;		/* bytes read of the handshake header, 0..4 */
	__u8 field;		/* enum tg_sh_field */
	__u8 sid_len;
	__u8 alert;		/* alert description, once known */
	__u8 done;		/* an event was returned */
	__u8 sv_seen;		/* a supported_versions extension was read */
	__u8 hs_type;		/* type of the handshake message being read */
	__u8 alert_level;	/* level of the alert being read */
	__u8 pad[6];
};

/*
 * What a TLS client writes, framed by record headers only: enough to see
 * that it is TLS, and to notice a client that gives up on TLS and goes on
 * in plaintext on the same connection.
 */
struct tg_tls_client {
	__u32 rec_left;
	__u16 rec_len;
	__u8 rec_hdr;
	__u8 pad;
};

/* Returns TG_TLS_BAD at the first byte that cannot be a TLS record. */
static TG_INLINE int tg_tls_client_feed(struct tg_tls_client *r,
					unsigned char c)
{
	if (r->rec_hdr < 5) {
		if ((r->rec_hdr == 0 && (c < TG_TLS_CT_CCS || c > TG_TLS_CT_APPDATA)) ||
		    (r->rec_hdr == 1 && c != 3))
			return TG_TLS_BAD;
		if (r->rec_hdr >= 3)
			r->rec_len = (__u16)(r->rec_len << 8 | c);
		r->rec_hdr++;
		if (r->rec_hdr == 5) {
			if (r->rec_len == 0 || r->rec_len > TG_TLS_REC_MAX)
				return TG_TLS_BAD;
			r->rec_left = r->rec_len;
		}
		return TG_TLS_NONE;
	}
	if (--r->rec_left == 0) {
		r->rec_hdr = 0;
		r->rec_len = 0;
	}
	return TG_TLS_NONE;
}

static TG_INLINE void tg_tls_init(struct tg_tls *t)
{
	__builtin_memset(t, 0, sizeof(*t));
}

static TG_INLINE int tg_tls_end(struct tg_tls *t, int ev)
{
	t->done = 1;
	return ev;
}

/* The ServerHello body is complete: check what was read. */
static TG_INLINE int tg_sh_done(struct tg_tls *t)
{
	if (t->field == TG_SH_EXT_LEN && t->field_pos == 0) {
		/* No extensions block: allowed before TLS 1.3. */
	} else if (t->field != TG_SH_EXT_TYPE || t->field_pos != 0 ||
		   t->ext_left != 0) {
		return tg_tls_end(t, TG_TLS_BAD);
	}
	/*
	 * TLS 1.3 says so only in supported_versions, and a client aborts a
	 * ServerHello that selects a version there below 1.3 or that claims
	 * more than 1.2 in legacy_version (RFC 8446 4.1.3, 4.2.1).
	 */
	/* Whether supported_versions was there, not whether it read 0. */
	if (t->sv_seen && t->selected < TG_TLS_1_3)
		return tg_tls_end(t, TG_TLS_BAD);
	if (!t->sv_seen && t->legacy_version > TG_TLS_1_2)
		return tg_tls_end(t, TG_TLS_BAD);
	t->version = t->sv_seen ? t->selected : t->legacy_version;
	return tg_tls_end(t, TG_TLS_VERSION);
}

/* One byte of the ServerHello body. */
static TG_INLINE int tg_sh_byte(struct tg_tls *t, unsigned char c)
{
	__u16 pos = t->field_pos;

	switch (t->field) {
	case TG_SH_VERSION:
		t->legacy_version = (__u16)(t->legacy_version << 8 | c);
		if (pos == 1) {
			t->field = TG_SH_RANDOM;
			pos = 0xffff;
		}
		break;
	case TG_SH_RANDOM:
		if (pos == 31) {
			t->field = TG_SH_SID_LEN;
			pos = 0xffff;
		}
		break;
	case TG_SH_SID_LEN:
		if (c > 32)
			return tg_tls_end(t, TG_TLS_BAD);
		t->sid_len = c;
		t->field = c ? TG_SH_SID : TG_SH_CIPHER;
		pos = 0xffff;
		break;
	case TG_SH_SID:
		if (pos + 1 == t->sid_len) {
			t->field = TG_SH_CIPHER;
			pos = 0xffff;
		}
		break;
	case TG_SH_CIPHER:
		t->cipher = (__u16)(t->cipher << 8 | c);
		if (pos == 1) {
			t->field = TG_SH_COMPRESSION;
			pos = 0xffff;
		}
		break;
	case TG_SH_COMPRESSION:
		t->field = TG_SH_EXT_LEN;
		pos = 0xffff;
		break;
	case TG_SH_EXT_LEN:
		t->ext_left = (__u16)(t->ext_left << 8 | c);
		if (pos == 1) {
			t->field = TG_SH_EXT_TYPE;
			pos = 0xffff;
		}
		break;
	case TG_SH_EXT_TYPE:
		if (t->ext_left == 0)
			return tg_tls_end(t, TG_TLS_BAD);
		t->ext_left--;
		t->ext_type = (__u16)(t->ext_type << 8 | c);
		if (pos == 1) {
			t->field = TG_SH_EXT_DLEN;
			pos = 0xffff;
		}
		break;
	case TG_SH_EXT_DLEN:
		if (t->ext_left == 0)
			return tg_tls_end(t, TG_TLS_BAD);
		t->ext_left--;
		t->ext_dlen = (__u16)(t->ext_dlen << 8 | c);
		if (pos == 1) {
			if (t->ext_dlen > t->ext_left)
				return tg_tls_end(t, TG_TLS_BAD);
			if (t->ext_type == TG_TLS_EXT_SUPPORTED_VERSIONS) {
				/* two bytes, and once (RFC 8446 4.2) */
				if (t->ext_dlen != 2 || t->sv_seen)
					return tg_tls_end(t, TG_TLS_BAD);
				t->sv_seen = 1;
			}
			t->field = t->ext_dlen ? TG_SH_EXT_DATA : TG_SH_EXT_TYPE;
			if (!t->ext_dlen)
				t->ext_type = 0;
			pos = 0xffff;
		}
		break;
	case TG_SH_EXT_DATA:
		t->ext_left--;
		t->ext_dlen--;
		if (t->ext_type == TG_TLS_EXT_SUPPORTED_VERSIONS)
			t->selected = (__u16)(t->selected << 8 | c);
		if (t->ext_dlen == 0) {
			t->field = TG_SH_EXT_TYPE;
			t->ext_type = 0;
			pos = 0xffff;
		}
		break;
	}
	t->field_pos = (__u16)(pos + 1);
	return TG_TLS_NONE;
}

/* One byte of the handshake stream (the bodies of handshake records). */
static TG_INLINE int tg_hs_byte(struct tg_tls *t, unsigned char c)
{
	if (t->hs_hdr < 4) {
		if (t->hs_hdr == 0) {
			if (c != TG_TLS_HS_SERVER_HELLO &&
			    c != TG_TLS_HS_HELLO_REQUEST)
				return tg_tls_end(t, TG_TLS_BAD);
			t->hs_type = c;
		} else {
			t->hs_len = t->hs_len << 8 | c;
		}
		t->hs_hdr++;
		if (t->hs_hdr < 4)
			return TG_TLS_NONE;
		if (t->hs_type == TG_TLS_HS_HELLO_REQUEST) {
			/*
			 * OpenSSL's client skips an empty HelloRequest during
			 * the handshake (tls_get_message_header()).
			 */
			if (t->hs_len != 0)
				return tg_tls_end(t, TG_TLS_BAD);
			t->hs_hdr = 0;
			t->hs_len = 0;
			return TG_TLS_NONE;
		}
		/* 38 bytes is the shortest ServerHello there is. */
		if (t->hs_len < 38 || t->hs_len > 65535)
			return tg_tls_end(t, TG_TLS_BAD);
		t->hs_left = t->hs_len;
		return TG_TLS_NONE;
	}
	if (tg_sh_byte(t, c) != TG_TLS_NONE)
		return TG_TLS_BAD;
	if (--t->hs_left == 0)
		return tg_sh_done(t);
	/* The body may not end inside a field that needs more bytes: */
	if (t->field == TG_SH_EXT_DATA && t->ext_dlen > t->hs_left)
		return tg_tls_end(t, TG_TLS_BAD);
	return TG_TLS_NONE;
}

static TG_INLINE int tg_tls_feed(struct tg_tls *t, unsigned char c)
{
	__u16 pos;

	if (t->done)
		return TG_TLS_NONE;
	if (t->rec_hdr < 5) {
		switch (t->rec_hdr) {
		case 0:
			if (c != TG_TLS_CT_HANDSHAKE && c != TG_TLS_CT_ALERT &&
			    c != TG_TLS_CT_CCS)
				return tg_tls_end(t, TG_TLS_BAD);
			t->rec_type = c;
			break;
		case 1:
			if (c != 3)
				return tg_tls_end(t, TG_TLS_BAD);
			break;
		case 2:
			break;
		default:
			t->rec_len = (__u16)(t->rec_len << 8 | c);
			break;
		}
		t->rec_hdr++;
		if (t->rec_hdr < 5)
			return TG_TLS_NONE;
		/*
		 * An empty handshake or ChangeCipherSpec record is skipped
		 * (OpenSSL: up to 32 in a row); any other ChangeCipherSpec
		 * before the ServerHello is an unexpected message.
		 */
		if (t->rec_len > TG_TLS_REC_MAX ||
		    (t->rec_len == 0 && t->rec_type == TG_TLS_CT_ALERT) ||
		    (t->rec_len != 0 && t->rec_type == TG_TLS_CT_CCS))
			return tg_tls_end(t, TG_TLS_BAD);
		t->rec_left = t->rec_len;
		t->rec_pos = 0;
		if (t->rec_len == 0)
			t->rec_hdr = 0;
		return TG_TLS_NONE;
	}
	pos = t->rec_pos++;
	if (--t->rec_left == 0) {
		t->rec_hdr = 0;
		t->rec_len = 0;
	}
	if (t->rec_type == TG_TLS_CT_HANDSHAKE)
		return tg_hs_byte(t, c);
	/*
	 * An alert: level, then description; more bytes are ignored (GnuTLS)
	 * or refused (OpenSSL). A client aborts at a fatal alert or a
	 * close_notify; it goes on after any other (OpenSSL: a warning,
	 * up to four in a row; GnuTLS: any level but fatal, unless the
	 * application gives up as Exim does).
	 */
	if (pos == 0) {
		t->alert_level = c;
		if (t->rec_hdr == 0)
			return tg_tls_end(t, TG_TLS_BAD);	/* one byte */
	} else if (pos == 1) {
		t->alert = c;
		if (t->alert_level == TG_TLS_AL_FATAL ||
		    c == TG_TLS_AD_CLOSE_NOTIFY)
			return tg_tls_end(t, TG_TLS_ALERT);
	}
	return TG_TLS_NONE;
}

#endif /* TG_TLS_H */
