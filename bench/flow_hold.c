// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	flow_hold - open, or accept, many TCP connections and hold them
 * SYNOPSIS
 *	flow_hold sink ADDR:PORT...
 *	flow_hold open -n COUNT ADDR:PORT...
 * DESCRIPTION
 *	Test equipment for tlsguard's flow-scale benchmark: thousands of
 *	established connections that stay open, idle, for as long as the
 *	benchmark measures.
 *
 *	"sink" listens on every ADDR:PORT (IPv4 loopback) and accepts every
 *	connection, reads nothing, sends nothing, and keeps it until the
 *	client closes it (EPOLLRDHUP); it runs until killed. It prints
 *	"listening" once all sockets listen.
 *
 *	"open" opens COUNT connections, spread round robin over the
 *	addresses given (each address has its own range of local ports),
 *	at most 512 handshakes in flight. When all are established it
 *	prints "open=COUNT elapsed_s=E" and waits until its standard input
 *	reaches end of file (the benchmark's signal), then closes them all,
 *	prints "closed elapsed_s=E" and exits 0.
 *
 *	Both raise their open file limit as needed (run as root).
 * DIAGNOSTICS
 *	Any failure ends the program with "flow_hold: fatal: ..." and exit
 *	status 1.
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "bench_util.h"

#define FH_INFLIGHT 512
#define FH_ADDRS_MAX 64

/* epoll data: a listening socket has FH_LISTEN set, an accepted one not. */
#define FH_LISTEN (1ULL << 32)

static void fh_sink(int naddr, char **addrs)
{
	struct epoll_event ev, evs[256];
	struct sockaddr_in sin;
	int i, n, fd, epfd;

	bu_raise_nofile(1 << 17);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		bu_fatal("epoll_create1: %s", strerror(errno));
	for (i = 0; i < naddr; i++) {
		bu_parse_addr(addrs[i], &sin);
		fd = bu_listen(&sin, SOCK_NONBLOCK, addrs[i]);
		ev.events = EPOLLIN;
		ev.data.u64 = FH_LISTEN | (__u32)fd;
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
			bu_fatal("epoll_ctl: %s", strerror(errno));
	}
	printf("listening\n");
	fflush(stdout);
	for (;;) {
		n = epoll_wait(epfd, evs, 256, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			bu_fatal("epoll_wait: %s", strerror(errno));
		for (i = 0; i < n; i++) {
			int lfd = (int)(__u32)evs[i].data.u64;

			if (!(evs[i].data.u64 & FH_LISTEN)) {
				/* The client closed: so do we. Nothing is read. */
				close(lfd);
				continue;
			}
			while ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC |
					     SOCK_NONBLOCK)) >= 0) {
				ev.events = EPOLLRDHUP;
				ev.data.u64 = (__u32)fd;
				if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
					bu_fatal("epoll_ctl: %s",
						 strerror(errno));
			}
			if (errno == EMFILE || errno == ENFILE)
				bu_fatal("accept: %s", strerror(errno));
		}
	}
}

static void fh_open(unsigned long count, int naddr, char **addrs)
{
	struct sockaddr_in sin[FH_ADDRS_MAX];
	struct pollfd pf[FH_INFLIGHT];
	unsigned long started = 0, done = 0, i;
	int *fds, k, n = 0, err;
	socklen_t elen;
	char c;
	__u64 t0;

	for (k = 0; k < naddr; k++)
		bu_parse_addr(addrs[k], &sin[k]);
	bu_raise_nofile(count + 256);
	fds = calloc(count, sizeof(*fds));
	if (!fds)
		bu_fatal("out of memory");

	t0 = bu_now_ns();
	while (done < count) {
		/* pf[0..n) are the handshakes in flight. */
		while (started < count && n < FH_INFLIGHT) {
			int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC |
						 SOCK_NONBLOCK, 0);

			if (fd < 0)
				bu_fatal("socket (#%lu): %s", started + 1,
					 strerror(errno));
			if (connect(fd, (struct sockaddr *)&sin[started % naddr],
				    sizeof(sin[0])) < 0 && errno != EINPROGRESS)
				bu_fatal("connect %s (#%lu): %s",
					 addrs[started % naddr], started + 1,
					 strerror(errno));
			fds[started++] = fd;
			pf[n].fd = fd;
			pf[n].events = POLLOUT;
			pf[n++].revents = 0;
		}
		if (poll(pf, (nfds_t)n, 10000) <= 0)
			bu_fatal("connections not established within 10 s "
				 "(%lu of %lu done)", done, count);
		for (k = 0; k < n;) {
			if (!pf[k].revents) {
				k++;
				continue;
			}
			elen = sizeof(err);
			if (getsockopt(pf[k].fd, SOL_SOCKET, SO_ERROR, &err,
				       &elen) < 0 || err)
				bu_fatal("connect: %s",
					 strerror(err ? err : errno));
			done++;
			pf[k] = pf[--n];
		}
	}
	printf("open=%lu elapsed_s=%.6f\n", count,
	       (double)(bu_now_ns() - t0) / 1e9);
	fflush(stdout);

	while (read(0, &c, 1) > 0)
		;
	t0 = bu_now_ns();
	for (i = 0; i < count; i++)
		close(fds[i]);
	printf("closed elapsed_s=%.6f\n", (double)(bu_now_ns() - t0) / 1e9);
	free(fds);
}

int main(int argc, char **argv)
{
	unsigned long count = 0;
	int c;

	bu_init(argv[0]);
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 3 && strcmp(argv[1], "sink") == 0) {
		if (argc - 2 > FH_ADDRS_MAX)
			bu_fatal("at most %d addresses", FH_ADDRS_MAX);
		fh_sink(argc - 2, argv + 2);
		return 0;
	}
	if (argc < 2 || strcmp(argv[1], "open") != 0)
		bu_fatal("usage: flow_hold sink ADDR:PORT... | "
			 "flow_hold open -n COUNT ADDR:PORT...");
	optind = 2;
	while ((c = getopt(argc, argv, "n:")) != -1) {
		if (c != 'n')
			bu_fatal("usage: flow_hold open -n COUNT ADDR:PORT...");
		count = bu_number("-n", optarg, 1, 1000000);
	}
	if (!count || optind >= argc || argc - optind > FH_ADDRS_MAX)
		bu_fatal("usage: flow_hold open -n COUNT ADDR:PORT... (at most "
			 "%d addresses)", FH_ADDRS_MAX);
	fh_open(count, argc - optind, argv + optind);
	return 0;
}
