// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_args - tlsguardd's command line
 * SYNOPSIS
 *	#include "tg_agent.h"
 *
 *	int	tg_parse_args(int argc, char **argv, struct tg_opts *o,
 *			      unsigned long long *budget);
 * DESCRIPTION
 *	tg_parse_args() fills o from the configuration file (-c), then from
 *	the flags, so that a flag overrides the file as an administrator
 *	expects; a flag is checked by the setting it stands for (see
 *	tg_config.h), and a list given on the command line (--port,
 *	--tls-port) replaces the file's as a whole. It returns 1 when the
 *	settings are to be printed rather than used (--print-config), 2 for
 *	only those that differ from the defaults, else 0. *budget is set,
 *	not 0, for --check-verifier, which needs neither a cgroup nor
 *	senders. --help prints the usage and exits 0; --version prints
 *	"tlsguardd VERSION" and exits 0.
 * DIAGNOSTICS
 *	A bad flag, value or file ends the program through msg_fatal(),
 *	naming the flag, or the file and line.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tg_agent.h"
#include "tg_log.h"

static const char usage[] =
	"usage: tlsguardd [-c FILE] [--cgroup DIR] [--senders FILE] "
	"[--port N]... [--tls-port N]...\n"
	"                 [--slots N] [--socket PATH] [--mx-check "
	"system|IP[:PORT]] [--audit FILE]\n"
	"                 [--metrics ADDR:PORT [--metrics-remote]] "
	"[--pin-dir DIR]\n"
	"                 [--syslog] [-v]\n"
	"                 [--print-config[=changed]] [--max-flows N] [--max-senders N] "
	"[--ringbuf-size BYTES]\n"
	"                 [--postfix-config DIR|none] [--tls-library-copies DIR]\n"
	"       tlsguardd --check-verifier[=BUDGET] [-c FILE] [--port N]... "
	"[--tls-port N]... [-v]\n"
	"       tlsguardd --help | --version\n"
	"\n"
	"--check-verifier loads the BPF programs without attaching them, "
	"prints what\n"
	"each cost this kernel's verifier, and exits 1 when one was refused "
	"or processed\n"
	"more than BUDGET instructions (default 150000).\n";

/* A command-line value, checked by the setting it stands for. */
static void tg_flag(struct tg_opts *o, const char *flag, const char *name,
		    const char *value)
{
	char why[600];

	if (tg_config_set(o, name, value, why, sizeof(why)) < 0)
		msg_fatal("%s: %s", flag, why);
	if (strcmp(name, "pin") == 0)
		snprintf(o->pin_note, sizeof(o->pin_note), "%s: always on; the "
			 "flag is ignored", flag);
}

/* A list flag given several times: its values, space-separated. */
static void tg_flag_append(char *list, size_t len, const char *flag,
			   const char *value)
{
	size_t used = strlen(list);

	if (used + strlen(value) + 2 > len)
		msg_fatal("%s: too many values", flag);
	snprintf(list + used, len - used, "%s%s", used ? " " : "", value);
}

/* The flags that stand for a setting of tlsguard.conf (see tg_config.h). */
static const struct tg_flag_row {
	int val;		/* getopt_long's */
	const char *flag;
	const char *setting;
	const char *value;	/* for a flag without one */
} tg_flag_rows[] = {
	{ 'g', "--cgroup", "cgroup", NULL },
	{ 's', "--senders", "senders_file", NULL },
	{ 'n', "--slots", "slots", NULL },
	{ 'S', "--socket", "control_socket", NULL },
	{ 'a', "--audit", "audit_file", NULL },
	{ 'P', "--pin", "pin", "yes" },
	{ 'I', "--pin-dir", "pin_dir", NULL },
	{ 'L', "--syslog", "syslog", "yes" },
	{ 'm', "--mx-check", "mx_check", NULL },
	{ 'M', "--metrics", "metrics_address", NULL },
	{ 'A', "--metrics-remote", "metrics_remote", "yes" },
	{ 'F', "--max-flows", "max_flows", NULL },
	{ 'E', "--max-senders", "max_senders", NULL },
	{ 'R', "--ringbuf-size", "ringbuf_size", NULL },
	{ 'X', "--postfix-config", "postfix_config", NULL },
	{ 'T', "--tls-library-copies", "tls_library_copies", NULL },
};

/* Flag c of tg_flag_rows[] with its value; -1 when c is none of them. */
static int tg_flag_setting(struct tg_opts *o, int c, const char *value)
{
	const struct tg_flag_row *r;
	char err[256];
	size_t i;

	for (i = 0; i < sizeof(tg_flag_rows) / sizeof(*tg_flag_rows); i++) {
		r = &tg_flag_rows[i];
		if (r->val != c)
			continue;
		/* --metrics names a malformed address in its words */
		if (c == 'M' && tg_metrics_check(value, 1, err, sizeof(err)) < 0)
			msg_fatal("%s", err);
		tg_flag(o, r->flag, r->setting, r->value ? r->value : value);
		return 0;
	}
	return -1;
}

/* --check-verifier=BUDGET: instructions, at least 1. */
static unsigned long long tg_budget(const char *value)
{
	unsigned long long v;
	char *end;

	if (!value)
		return TG_VERIFIER_BUDGET;
	errno = 0;
	v = strtoull(value, &end, 10);
	if (*value < '0' || *value > '9' || *end || errno || v == 0)
		msg_fatal("--check-verifier=%s: expected a number of "
			  "instructions, 1 or more", value);
	return v;
}

/* See above. */
int tg_parse_args(int argc, char **argv, struct tg_opts *o,
			 unsigned long long *budget)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "cgroup", required_argument, NULL, 'g' },
		{ "senders", required_argument, NULL, 's' },
		{ "port", required_argument, NULL, 'p' },
		{ "tls-port", required_argument, NULL, 't' },
		{ "slots", required_argument, NULL, 'n' },
		{ "socket", required_argument, NULL, 'S' },
		{ "mx-check", required_argument, NULL, 'm' },
		{ "audit", required_argument, NULL, 'a' },
		{ "metrics", required_argument, NULL, 'M' },
		{ "metrics-remote", no_argument, NULL, 'A' },
		{ "pin", no_argument, NULL, 'P' },
		{ "pin-dir", required_argument, NULL, 'I' },
		{ "syslog", no_argument, NULL, 'L' },
		{ "print-config", optional_argument, NULL, 'D' },
		{ "max-flows", required_argument, NULL, 'F' },
		{ "max-senders", required_argument, NULL, 'E' },
		{ "ringbuf-size", required_argument, NULL, 'R' },
		{ "postfix-config", required_argument, NULL, 'X' },
		{ "tls-library-copies", required_argument, NULL, 'T' },
		{ "check-verifier", optional_argument, NULL, 'C' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	static char ports[256], tls_ports[256];
	char err[1024];
	int c, print = 0, metrics_flag = 0;

	tg_config_defaults(o);
	opterr = 0;
	/* Pass 1: the configuration file. */
	while ((c = getopt_long(argc, argv, "vc:", longopts, NULL)) != -1)
		if (c == 'c' && tg_config_read(o, optarg, err, sizeof(err)) < 0)
			msg_fatal("%s", err);
	optind = 1;
	while ((c = getopt_long(argc, argv, "vc:", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			break;
		case 'p':
			tg_flag_append(ports, sizeof(ports), "--port", optarg);
			break;
		case 't':
			tg_flag_append(tls_ports, sizeof(tls_ports),
				       "--tls-port", optarg);
			break;
		case 'D':
			print = optarg && strcmp(optarg, "changed") == 0 ? 2 : 1;
			if (optarg && print == 1)
				msg_fatal("--print-config=%s: expected "
					  "--print-config or "
					  "--print-config=changed", optarg);
			break;
		case 'v':
			o->verbose++;
			break;
		case 'C':
			*budget = tg_budget(optarg);
			break;
		case 'h':
			fputs(usage, stdout);
			exit(0);
		case 'V':
			printf("tlsguardd %s\n", TG_VERSION);
			exit(0);
		default:
			metrics_flag |= c == 'M';
			if (tg_flag_setting(o, c, optarg) < 0)
				msg_fatal("%s: %s", argv[optind - 1] ?
					  argv[optind - 1] : "?",
					  optopt ? "option needs a value" :
					  "unknown option (see --help)");
		}
	}
	if (optind < argc)
		msg_fatal("unexpected argument \"%s\" (see --help)",
			  argv[optind]);
	/* After every flag: --metrics-remote may come after --metrics. */
	if (metrics_flag && tg_metrics_check(o->metrics, o->metrics_remote,
					     err, sizeof(err)) < 0)
		msg_fatal("%s", err);
	/* A list on the command line replaces the file's, as a whole. */
	if (ports[0] || tls_ports[0]) {
		tg_flag(o, "--port", "smtp_ports", "");
		tg_flag(o, "--tls-port", "smtps_ports", tls_ports);
		tg_flag(o, "--port", "smtp_ports", ports);
	}
	if (!print && !*budget && tg_config_finish(o, err, sizeof(err)) < 0)
		msg_fatal("%s", err);
	if (print || *budget) {
		/* Derived values as the daemon would use them. */
		tg_config_finish(o, err, sizeof(err));
	}
	return print;
}
