// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	held_latency - time tlsguard's verdict on held messages
 * SYNOPSIS
 *	held_latency [-m MESSAGES] [-k PER_CONNECTION] [-e CODE] [-f FROM]
 *		[-t TO] [-o FILE] ADDR:PORT
 * DESCRIPTION
 *	Plays an MTA in the guarded cgroup: connects to ADDR:PORT (an SMTP
 *	sink on IPv4 loopback without STARTTLS), reads the greeting, sends
 *	EHLO, and then, MESSAGES times (default 10000), writes "MAIL
 *	FROM:<FROM>", "RCPT TO:<TO>" and "DATA" in one write, as Postfix
 *	pipelines them, and measures the time from just before that write
 *	to the moment the reply to MAIL has been read in full. That is the
 *	verdict latency: with FROM a guaranteed sender, the reply is
 *	tlsguardd's 550, injected through the kernel.
 *
 *	It then reads the replies to RCPT and DATA. If DATA was accepted
 *	(354: the sender was not held, as in a baseline run) it sends an
 *	empty body's dot and reads that reply too. Then it ends the
 *	transaction as Postfix does, with RSET, and reads the 250
 *	(tlsguardd hands a flow back to the kernel after RSET). With
 *	PER_CONNECTION 0 (default) every message goes over the same
 *	connection; with PER_CONNECTION k > 0, QUIT follows every k-th RSET
 *	and the next message opens a new connection, so -k 1 is one
 *	connection per message.
 *
 *	CODE (default 550) is the reply to MAIL every message must get.
 *	FROM and TO default to alice@guaranteed.bench and
 *	rcpt@sink.bench. FILE receives one latency a line, in nanoseconds.
 * DIAGNOSTICS
 *	On success it prints one line: "n=N errors=E p50_us=.. p90_us=..
 *	p99_us=.. p999_us=.. max_us=.. mean_us=..". A reply to MAIL other
 *	than CODE is counted in E; a lost connection is fatal (exit 1).
 */
#include <netinet/in.h>
#include <sys/socket.h>

#include "bench_util.h"

static int hl_cmp(const void *a, const void *b)
{
	__u64 x = *(const __u64 *)a, y = *(const __u64 *)b;

	return x < y ? -1 : x > y;
}

static double hl_pct(const __u64 *v, unsigned long n, double p)
{
	unsigned long i = (unsigned long)(p * (double)(n - 1) + 0.5);

	return (double)v[i] / 1e3;
}

static void hl_expect(struct bu_io *io, int want, const char *what)
{
	int code;

	if (bu_io_reply(io, &code) < 0)
		bu_fatal("%s: connection lost", what);
	if (want && code != want)
		bu_fatal("%s: got %d, expected %d", what, code, want);
}

static void hl_open(struct bu_io *io, const struct sockaddr_in *addr)
{
	static const char ehlo[] = "EHLO held-latency.bench\r\n";
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		bu_fatal("socket: %s", strerror(errno));
	if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0)
		bu_fatal("connect: %s", strerror(errno));
	bu_io_init(io, fd);
	hl_expect(io, 220, "greeting");
	if (bu_io_write(io, ehlo, sizeof(ehlo) - 1) < 0)
		bu_fatal("EHLO: connection lost");
	hl_expect(io, 250, "EHLO");
}

static void hl_close(struct bu_io *io)
{
	if (bu_io_write(io, "QUIT\r\n", 6) < 0)
		bu_fatal("QUIT: connection lost");
	hl_expect(io, 221, "QUIT");
	close(io->fd);
	io->fd = -1;
}

int main(int argc, char **argv)
{
	const char *from = "alice@guaranteed.bench", *to = "rcpt@sink.bench";
	const char *outfile = NULL;
	unsigned long n = 10000, per_conn = 0, i, errors = 0;
	struct sockaddr_in addr;
	struct bu_io io = { .fd = -1 };
	char envelope[1024];
	double sum = 0;
	int c, w, want = 550, code;
	__u64 *lat, t0;
	FILE *fp;

	bu_init(argv[0]);
	while ((c = getopt(argc, argv, "m:k:e:f:t:o:")) != -1) {
		switch (c) {
		case 'm':
			n = bu_number("-m", optarg, 1, 100000000);
			break;
		case 'k':
			per_conn = bu_number("-k", optarg, 0, 100000000);
			break;
		case 'e':
			want = (int)bu_number("-e", optarg, 200, 599);
			break;
		case 'f':
			from = optarg;
			break;
		case 't':
			to = optarg;
			break;
		case 'o':
			outfile = optarg;
			break;
		default:
			bu_fatal("usage: held_latency [-m MESSAGES] "
				 "[-k PER_CONNECTION] [-e CODE] [-f FROM] "
				 "[-t TO] [-o FILE] ADDR:PORT");
		}
	}
	if (optind != argc - 1)
		bu_fatal("usage: held_latency [options] ADDR:PORT");
	bu_parse_addr(argv[optind], &addr);
	w = snprintf(envelope, sizeof(envelope),
		     "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n", from, to);
	if (w < 0 || (size_t)w >= sizeof(envelope))
		bu_fatal("-f or -t too long");
	lat = calloc(n, sizeof(*lat));
	if (!lat)
		bu_fatal("out of memory");

	for (i = 0; i < n; i++) {
		if (io.fd < 0)
			hl_open(&io, &addr);
		t0 = bu_now_ns();
		if (bu_io_write(&io, envelope, (size_t)w) < 0)
			bu_fatal("MAIL: connection lost");
		if (bu_io_reply(&io, &code) < 0)
			bu_fatal("MAIL: connection lost (message %lu)", i + 1);
		lat[i] = bu_now_ns() - t0;
		errors += code != want;
		hl_expect(&io, 0, "RCPT");
		if (bu_io_reply(&io, &code) < 0)
			bu_fatal("DATA: connection lost");
		if (code == 354) {
			if (bu_io_write(&io, ".\r\n", 3) < 0)
				bu_fatal("end of data: connection lost");
			hl_expect(&io, 0, "end of data");
		}
		if (bu_io_write(&io, "RSET\r\n", 6) < 0)
			bu_fatal("RSET: connection lost");
		hl_expect(&io, 250, "RSET");
		if (per_conn && (i + 1) % per_conn == 0)
			hl_close(&io);
	}
	if (io.fd >= 0)
		hl_close(&io);

	if (outfile) {
		fp = fopen(outfile, "w");
		if (!fp)
			bu_fatal("%s: %s", outfile, strerror(errno));
		for (i = 0; i < n; i++)
			fprintf(fp, "%llu\n", (unsigned long long)lat[i]);
		if (fclose(fp) != 0)
			bu_fatal("%s: %s", outfile, strerror(errno));
	}
	for (i = 0; i < n; i++)
		sum += (double)lat[i];
	qsort(lat, n, sizeof(*lat), hl_cmp);
	printf("n=%lu errors=%lu p50_us=%.1f p90_us=%.1f p99_us=%.1f "
	       "p999_us=%.1f max_us=%.1f mean_us=%.1f\n", n, errors,
	       hl_pct(lat, n, 0.50), hl_pct(lat, n, 0.90),
	       hl_pct(lat, n, 0.99), hl_pct(lat, n, 0.999),
	       (double)lat[n - 1] / 1e3, sum / (double)n / 1e3);
	free(lat);
	return 0;
}
