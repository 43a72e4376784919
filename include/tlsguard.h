/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tlsguard.h - what the BPF programs and the agent share: map values,
 *	events and limits
 * DESCRIPTION
 *	Flows are the MTA's outbound TCP connections to a guarded port. Each
 *	is known by its socket cookie, which keys the sockhash (tg_socks) and
 *	the flow table (tg_flows). The agent's injection sockets live in the
 *	same sockhash under their own cookies, and in tg_injects (cookie ->
 *	slot). A socket of tg_socks in neither table is a flow the flow
 *	table had no room for: every write on it is dropped.
 *
 *	A flow whose sender must be held is "diverted": it is given one
 *	injection slot, a loopback TCP pair owned by the agent. Everything
 *	the MTA writes from the held MAIL command on goes out through the
 *	slot's near end to the agent; what the agent writes on that end is
 *	redirected into the MTA's receive queue as if the remote host had
 *	said it. One slot serves one flow at a time, so replies can never
 *	reach another flow; the agent replaces a slot's pair before it reuses
 *	the slot, so no byte of an old flow can reach a new one.
 */
#ifndef TLSGUARD_H
#define TLSGUARD_H

#include "tg_types.h"
#include "tg_smtp.h"
#include "tg_tls.h"

#define TG_PORTS_MAX	8
#define TG_FLOWS_MAX	65536
#define TG_SENDERS_MAX	(1U << 20)
/* tg_stab_bits(TG_SENDERS_MAX): the homes of tg_senders by default */
#define TG_STAB_DEFAULT_BITS	18

/*
 * tg_senders: key tg_addr_key() of "user@domain" or of "@domain", value
 * what the entry says. An exempt entry wins over a guaranteed one (the
 * users' own forwards), so that "@example.org" can be guaranteed while
 * "lists@example.org" is not. The exempt list's "SRS0=" and "SRS1="
 * entries have keys of their own, which no address hashes to in practice
 * (a 64-bit FNV-1a value; see tg_cmd_srs()).
 */
#define TG_POL_GUARANTEED	1
#define TG_POL_EXEMPT		2
#define TG_KEY_SRS0	0x7467535253303dULL	/* "tgSRS0=" */
#define TG_KEY_SRS1	0x7467535253313dULL	/* "tgSRS1=" */
/*
 * Present when the senders name an internationalized domain: a MAIL whose
 * domain is not ASCII and matches no key is held for the agent, which
 * reads it with IDNA (include/tg_rule.h).
 */
#define TG_KEY_IDN   0x746749444e3dULL /* "tgIDN=" */
#define TG_SLOTS_MAX 4096
#define TG_NO_SLOT   0xffffffffU

/*
 * The layout of the pinned maps (--pin): tlsguardd keeps its maps under a
 * directory named by a digest of every map's type, key and value size,
 * room and flags, and of this number. A build whose maps differ loads
 * beside the pinned ones, as a new generation, and the old generation's
 * connections drain under its own programs (agent/tg_pin.c). Raise it
 * when a map's value changes its meaning without changing its size.
 * The values of enum tg_flow_state and the names of struct tg_flow's
 * cookie, state, family, lport, rport, laddr and raddr are kept by
 * every layout: a new agent reads an old generation's held flows by them.
 */
#define TG_LAYOUT_VERSION 1

enum tg_flow_state {
	TG_FS_PLAIN = 1,	/* plaintext SMTP, commands are read */
	TG_FS_TLS,		/* TLS 1.2 or higher negotiated */
	TG_FS_DIVERTED,		/* the agent answers for the host */
	TG_FS_FAILED,		/* failed closed: every write is dropped */
	TG_FS_HANDSHAKE,	/* STARTTLS accepted (or implicit TLS): the
				 * server's ServerHello is awaited */
	TG_FS_WEAK,		/* TLS below 1.2 negotiated */
	TG_FS_TLS_FAILED,	/* the handshake failed (alert, bad flight) */
};

#define TG_SENDER_MAX	64	/* bytes of the last sender kept for display */

/* Why a flow was diverted. */
enum tg_why {
	TG_WHY_NONE,
	TG_WHY_NO_TLS,		/* a guaranteed sender on a plaintext flow */
	TG_WHY_BAD_MAIL,	/* a MAIL command the kernel cannot vouch for */
	TG_WHY_WEAK_TLS,	/* a guaranteed sender inside TLS below 1.2 */
	TG_WHY_UNSEEN_TLS,	/* TLS below 1.2, or a handshake tlsguard
				 * could not read, that no uprobe sees */
	TG_WHY_UNWATCHED,	/* the sockhash had no room: destroy it */
	TG_WHY_DESYNC,		/* a line the MTA's client and the host may
				 * read otherwise than tlsguard: the count
				 * of commands and replies is lost */
};

/*
 * The SMTP conversation inside a flow's TLS session, as the uprobes on
 * the TLS library see it: the same parsers as on the wire.
 */
struct tg_inner {
	struct tg_cmd cmd;
	struct tg_reply reply;
	__u32 cmds;		/* replies owed (the greeting counts once) */
	__u32 replies;
	__u32 data_cmd;		/* as in struct tg_flow */
	__u32 pad;
};

/*
 * tg_smtp_msg's checkpoint of a flow: the command parser's state and the
 * counters at the start of the line in progress. When that line's bytes
 * are held back (corked until it is complete, or left for the next run),
 * the flow is rewound to it, and the bytes are parsed again when they
 * come round.
 */
struct tg_cmd_mark {
	struct tg_cmd cmd;
	__u32 cmds;
	__u32 data_cmd;
	__u32 starttls_cmd;
	__u32 pad;
};

/* Value of tg_flows, keyed by the MTA socket's cookie. */
struct tg_flow {
	struct tg_cmd cmd;	/* what the MTA writes */
	struct tg_reply reply;	/* what the host answers */
	__u64 cookie;
	__u64 start_ns;		/* bpf_ktime_get_ns() at establishment; 0
				 * while the connect is under way */
	__u32 state;		/* enum tg_flow_state */
	__u32 slot;		/* TG_FS_DIVERTED: injection slot */
	__u32 why;		/* enum tg_why */
	__u32 cmds;		/* commands sent to the host; the greeting is #0 */
	__u32 replies;		/* final replies seen from the host */
	__u32 data_cmd;		/* index of the last DATA, 0 if none pending */
	__u32 starttls_cmd;	/* index of STARTTLS, 0 if none pending */
	__u32 ehlo_cmd;		/* index of EHLO, 0 if none pending */
	__u32 held;		/* messages held on this flow */
	__u16 starttls_offered;	/* the last EHLO reply advertised STARTTLS */
	__u16 chunking_offered;	/* ... and CHUNKING (RFC 3030 BDAT) */
	__u16 tls_version;	/* from the ServerHello, 0 if none */
	__u16 tls_cipher;
	__u8 tls_alert;		/* alert that ended the handshake */
	__u8 plain_again;	/* plaintext again after a handshake began */
	__u8 pad3[2];
	struct tg_tls tls;	/* the server's first TLS flight */
	struct tg_tls_client tlsc;	/* record framing of the client */
	struct tg_inner inner;	/* SMTP inside TLS (uprobes) */
	__u32 ssl_seen;		/* a uprobe tied a TLS session to the flow */
	__u32 implicit_tls;	/* TLS from the first byte (SMTPS) */
	char sender[TG_SENDER_MAX];	/* last MAIL FROM, as written */
	__u16 family;		/* AF_INET or AF_INET6 */
	__u16 lport;		/* host byte order */
	__u16 rport;		/* host byte order */
	__u16 pad;
	__u8 laddr[16];		/* IPv4 in the first four bytes */
	__u8 raddr[16];
	struct tg_cmd_mark mark;	/* see struct tg_cmd_mark */
};

/* Value of tg_slots, indexed by slot. */
struct tg_slot {
	__u64 flow;		/* cookie of the MTA socket it serves, 0 if free */
	__u64 inject;		/* cookie of the slot's near end */
};

/* Why a flow was failed closed, for the counters (struct tg_stats). */
enum tg_fail {
	TG_FAIL_NO_SLOT,	/* a divert found no free injection slot */
	TG_FAIL_PENDING,	/* a divert behind replies the host owes */
	TG_FAIL_SLOT_GONE,	/* a held flow's slot was renewed, or died
				 * with the agent (--pin) */
	TG_FAIL_UNREADABLE,	/* bytes the kernel cannot read or vouch for */
	TG_FAIL_WEAK_TLS,	/* a guaranteed sender inside TLS below 1.2 */
	TG_FAIL_UNSEEN_TLS,	/* TLS below 1.2 that no uprobe can read */
	TG_FAIL_MAX = 8,
};

/*
 * A key of tg_senders that no address has (like TG_KEY_SRS0, a 64-bit
 * FNV-1a value no address hashes to in practice; 0 marks a free slot of
 * the table): present when the senders did not all fit in the map. Every
 * MAIL on a flow without TLS is then held, and the agent, which has the
 * whole list, answers each sender as the list says (a sender who is not
 * guaranteed gets a temporary error): fail closed, never open.
 */
#define TG_SENDERS_INCOMPLETE	0x7467494e434d50ULL	/* "tgINCMP" */

/* Counters, a per-CPU array of one element. */
struct tg_stats {
	__u64 flows;		/* flows tracked since start */
	__u64 flows_untracked;	/* flow table full: flow blocked */
	__u64 sockhash_full;	/* sockhash full: flow not enforced */
	__u64 diverted;		/* flows diverted */
	__u64 no_slot;		/* divert needed, no slot: write dropped */
	__u64 passed_mail;	/* MAIL commands passed */
	__u64 tls;		/* flows that negotiated TLS 1.2 or higher */
	__u64 tls_weak;		/* flows that negotiated TLS below 1.2 */
	__u64 tls_failed;	/* handshakes that failed */
	__u64 lost_flow;	/* socket in tg_socks without flow state */
	__u64 events_lost;	/* ring buffer full */
	__u64 corked;		/* writes held for the rest of a line */
	__u64 weak_held;	/* guaranteed MAIL inside TLS below 1.2 */
	__u64 msg_dropped;	/* writes dropped by tg_smtp_msg */
	__u64 skb_dropped;	/* segments dropped by tg_reply_skb */
	__u64 failed[TG_FAIL_MAX];	/* flows failed closed, by enum tg_fail */
	__u64 fastopen_refused;	/* connects with TCP Fast Open refused */
	__u64 table_refused;	/* connects refused: the flow table full */
#ifdef TG_LAYOUT_PAD
	/*
	 * A test hook, never set in a release: another layout of tg_stats
	 * (make layout2), for the upgrade test's second build.
	 */
	__u8 layout_pad[TG_LAYOUT_PAD];
#endif
};

/*
 * tg_conns: connections of the guarded cgroup to guarded ports that hold,
 * or will hold once established, an entry of tg_flows: counted from the
 * connect (sock_ops TCP_CONNECT_CB) to the close. tg_connect refuses a
 * new one once it reaches the flow table's size.
 */
struct tg_conns {
	__s64 live;
};

/* Key of tg_ssl: a TLS session object of one process. */
struct tg_ssl_key {
	__u64 ssl;		/* the SSL pointer */
	__u32 tgid;
	__u32 pad;
};

/*
 * Value of tg_ssl_writes, keyed by pid_tgid: the writes of TLS records a
 * thread may still make on a flow that the uprobes judge, because a
 * probed write function was given their plaintext (one record holds at
 * most TG_TLS_PLAIN_MAX bytes of it; a library writes each record, or a
 * few together, with one system call). Granted at the call's entry,
 * used up by tg_smtp_msg, void after TG_LICENCE_NS.
 */
#define TG_TLS_PLAIN_MAX 16384
#define TG_LICENCE_MAX	65536
#define TG_LICENCE_NS	(2ULL * 1000000000ULL)
struct tg_write_lic {
	__u64 cookie;		/* the flow */
	__u64 until_ns;		/* bpf_ktime_get_ns() it is void after */
	__u32 left;		/* writes that carry application data */
	__u32 pad;
};

/* Value of tg_ssl_read: an SSL_read in progress, keyed by pid_tgid. */
struct tg_ssl_read {
	__u64 ssl;
	__u64 buf;
	__u64 num;		/* size of buf */
	__u64 readbytes;	/* SSL_read_ex: where the count goes, else 0 */
};

enum tg_event_type {
	TG_EV_DIVERT = 1,	/* a flow was diverted to a slot */
	TG_EV_CLOSE,		/* a diverted flow closed: its slot is free */
	TG_EV_TLS,		/* a flow's handshake ended: see state */
	TG_EV_NO_SLOT,		/* a flow needed a slot and none was free */
	TG_EV_KILL,		/* a flow was failed closed: destroy it */
	TG_EV_LINE,		/* an SMTP line of a flow: struct tg_line_event */
};

#define TG_LINE_TEXT	255	/* bytes of a line kept for the audit trail */

/* Flags of struct tg_line_event. */
#define TG_LINE_REPLY	0x1	/* from the host (else from the MTA) */
#define TG_LINE_TLS	0x2	/* read inside TLS, by the uprobes */
#define TG_LINE_HELD	0x4	/* the command was held, not sent */
#define TG_LINE_END	0x8	/* the end of a DATA body (text is ".") */
#define TG_LINE_CUT	0x10	/* the line began in an earlier write */

/*
 * Ring buffer record of one SMTP command or final reply line of a flow,
 * for the audit trail: message bodies are never sent, only their end.
 * It carries the flow's addresses: a short connection may be closed, and
 * gone from tg_flows, before the agent reads its first line.
 */
struct tg_line_event {
	__u32 type;		/* TG_EV_LINE */
	__u32 flags;		/* TG_LINE_* */
	__u64 cookie;
	__u32 len;		/* bytes of text (the line, without CR LF) */
	__u16 family;		/* as in struct tg_flow */
	__u16 lport;
	__u16 rport;
	__u16 pad;
	__u8 laddr[16];
	__u8 raddr[16];
	char text[TG_LINE_TEXT + 1];
};

/* Ring buffer record. */
struct tg_event {
	__u32 type;		/* enum tg_event_type */
	__u32 slot;
	__u64 cookie;
	__u32 why;
	__u16 family;
	__u16 lport;
	__u16 rport;
	__u16 tls_version;
	__u32 state;
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 tls_cipher;
	__u16 pad;
	__u32 pad2;
};

#endif /* TLSGUARD_H */
