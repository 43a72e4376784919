// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_gnutls_uprobe - read SMTP inside the MTA's TLS sessions, through
 *	uprobes on GnuTLS (libgnutls.so.30: Exim, among others)
 * DESCRIPTION
 *	The same work as tg_ssl_uprobe.bpf.c (see tg_tls_lib.bpf.h), on
 *	GnuTLS's functions:
 *
 *	gnutls_transport_set_ptr(session, ptr), gnutls_transport_set_ptr2(
 *	session, recv, send) and gnutls_transport_set_int2(session, recv,
 *	send) give the session its socket. An application that uses the
 *	library's own socket I/O passes the descriptor there, as an int or
 *	cast to a pointer (Exim 4.96 calls gnutls_transport_set_ptr with the
 *	fd); the send side is the one that is looked up. A real pointer
 *	(custom push/pull functions) names no descriptor and is ignored: such
 *	a session stays unseen, and below TLS 1.2 its flow is failed closed.
 *	gnutls_transport_set_int() is a macro for set_int2.
 *
 *	gnutls_handshake(session) confirms the tie.
 *
 *	gnutls_record_send2(session, data, size, pad, flags) is probed rather
 *	than gnutls_record_send: the latter is a jump to the former, so
 *	probing both would read every write twice. gnutls_record_recv(
 *	session, data, size) returns a ssize_t: the count, 0 at the end, or
 *	a negative error code.
 */
#include "tg_tls_lib.bpf.h"

SEC("uprobe")
int BPF_KPROBE(tg_gnutls_set_ptr, void *session, void *ptr)
{
	tg_tls_tie((__u64)(long)session, (long)ptr);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tg_gnutls_set_ptr2, void *session, void *recv, void *send)
{
	tg_tls_tie((__u64)(long)session, (long)send);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tg_gnutls_set_int2, void *session, int recv, int send)
{
	tg_tls_tie((__u64)(long)session, send);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tg_gnutls_handshake, void *session)
{
	tg_tls_handshake((__u64)(long)session);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tg_gnutls_send, void *session, const void *data, __u64 size)
{
	tg_tls_out(session, data, size);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tg_gnutls_recv, void *session, void *data, __u64 size)
{
	tg_tls_read_enter(session, data, size, NULL);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(tg_gnutls_recv_ret, long ret)
{
	tg_tls_read_return(ret);
	return 0;
}
