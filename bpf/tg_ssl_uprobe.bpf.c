// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_ssl_uprobe - read SMTP inside the MTA's TLS sessions, through
 *	uprobes on OpenSSL's libssl
 * DESCRIPTION
 *	The uprobes are attached to the library file, so they fire in every
 *	process that maps it; they act only for tasks in the guarded cgroup.
 *	What they do is in tg_tls_lib.bpf.h, shared with the GnuTLS probes;
 *	here is only how libssl's functions pass it their arguments.
 *
 *	SSL_set_fd(ssl, fd) ties a session to a flow; SSL_connect(ssl)
 *	confirms it. SSL_write(ssl, buf, num) and SSL_write_ex() hand the
 *	plaintext of a write to the inner command parser, before the library
 *	encrypts it; SSL_read() and SSL_read_ex() what was read to the inner
 *	reply parser, on return.
 */
#include "tg_tls_lib.bpf.h"

SEC("uprobe")
int BPF_KPROBE(tg_ssl_set_fd, void *ssl, int fd)
{
	tg_tls_tie((__u64)(long)ssl, fd);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tg_ssl_connect, void *ssl)
{
	tg_tls_handshake((__u64)(long)ssl);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tg_ssl_write, void *ssl, const void *buf, int num)
{
	if (num > 0)
		tg_tls_out(ssl, buf, (__u64)num);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tg_ssl_write_ex, void *ssl, const void *buf, __u64 num)
{
	tg_tls_out(ssl, buf, num);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tg_ssl_read, void *ssl, void *buf, int num)
{
	tg_tls_read_enter(ssl, buf, num > 0 ? (__u64)num : 0, NULL);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tg_ssl_read_ex, void *ssl, void *buf, __u64 num,
	       void *readbytes)
{
	tg_tls_read_enter(ssl, buf, num, readbytes);
	return 0;
}

/* Both return an int: its sign is in the register's low half only. */
SEC("uretprobe")
int BPF_KRETPROBE(tg_ssl_read_ret, long ret)
{
	tg_tls_read_return((long)(int)ret);
	return 0;
}
