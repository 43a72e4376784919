// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tlsguardctl - ask a running tlsguardd what it is doing
 * SYNOPSIS
 *	tlsguardctl [--socket PATH] status
 *	tlsguardctl [--socket PATH] flows
 * DESCRIPTION
 *	status prints a short summary (cgroup, senders, flows tracked,
 *	flows diverted, messages held) of the tlsguardd listening on the
 *	control socket (default /run/tlsguard/tlsguardd.sock).
 *
 *	flows prints one line per tracked connection: the remote host as
 *	host[addr]:port, its state (plain, handshake, tls, weak-tls,
 *	tls-failed, held, failed), the TLS version negotiated, whether the
 *	host's EHLO reply offered STARTTLS, its age in seconds and the last
 *	sender seen on it in plaintext.
 * DIAGNOSTICS
 *	Exit status 0 when tlsguardd answered; 1 with one line
 *	"tlsguardctl: fatal: ..." when it is not running, or refused.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tg_ctl.h"

static void fatal(const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "tlsguardctl: fatal: ");
	fprintf(stderr, fmt, a, b);
	fputc('\n', stderr);
	exit(1);
}

static void usage(void)
{
	fputs("usage: tlsguardctl [--socket PATH] status|flows\n", stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 5 };
	const char *path = TG_CTL_DEFAULT, *cmd = NULL;
	static char reply[TG_CTL_REPLY_MAX + 1];
	size_t got = 0;
	ssize_t n;
	char *body;
	int i, fd;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
			path = argv[++i];
		else if (strcmp(argv[i], "-h") == 0 ||
			 strcmp(argv[i], "--help") == 0)
			usage();
		else if (!cmd)
			cmd = argv[i];
		else
			usage();
	}
	if (!cmd || (strcmp(cmd, "status") != 0 && strcmp(cmd, "flows") != 0))
		usage();
	if (strlen(path) >= sizeof(sun.sun_path))
		fatal("--socket %s: path too long%s", path, "");
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		fatal("socket: %s%s", strerror(errno), "");
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
		fatal("tlsguardd is not running (%s: %s)", path,
		      strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (dprintf(fd, "%s\n", cmd) < 0)
		fatal("%s: %s", path, strerror(errno));
	while (got < TG_CTL_REPLY_MAX &&
	       (n = read(fd, reply + got, TG_CTL_REPLY_MAX - got)) > 0)
		got += (size_t)n;
	close(fd);
	reply[got] = 0;
	if (strncmp(reply, "ok\n", 3) != 0) {
		reply[strcspn(reply, "\n")] = 0;
		fatal("tlsguardd answered: %s%s", got ? reply : "nothing", "");
	}
	body = reply + 3;
	fputs(body, stdout);
	return 0;
}
