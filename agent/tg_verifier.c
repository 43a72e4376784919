// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_verifier - measure each BPF program as this kernel verifies it
 *	(see tg_verifier.h)
 * DESCRIPTION
 *	Which program was refused: libbpf loads the programs in object
 *	order and stops at the first the kernel refuses; then it unloads
 *	them all, so that no program has a descriptor left. The refused one
 *	is therefore the last, in object order, whose log is not empty (those
 *	after it were never offered to the kernel), provided that log says
 *	why: an error line, or more instructions than the limit. A load that
 *	failed before any program was offered (a map, BTF, a relocation)
 *	leaves every log empty and refuses nothing.
 *
 *	libbpf 1.1 asks for a verifier log only after a failed load, at
 *	level 1, into a buffer of its own. A program given a buffer and a
 *	level here is loaded once, with both, and libbpf prints no log of
 *	it: this module prints it when asked to.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tg_log.h"
#include "tg_verifier.h"

/*
 * Log buffer sizes. When a log does not fit its buffer the kernel
 * refuses the program with ENOSPC, even one it verified (Linux 6.1's
 * fixed log, and the rotating log since 6.4 alike): the buffer must be
 * large enough that asking for a measure never costs a program. At
 * level 4 a log is a few hundred bytes, or a few kilobytes when the
 * verifier dumps a state with its error; 1 MiB leaves room for both. At
 * level 1 it grows with the program, by tens of bytes per instruction
 * explored. The memory is the process's only as far as the kernel
 * writes into it.
 */
#define TG_VLOG_STATS	(1UL << 20)
#define TG_VLOG_FULL	(64UL << 20)
#define TG_VLEVEL_STATS	4		/* BPF_LOG_STATS */
#define TG_VLEVEL_FULL	(1 | 4)		/* BPF_LOG_LEVEL1 | BPF_LOG_STATS */

/*
 * libbpf's messages held back during a quiet load: records of one level
 * byte and a string. Bounded: what does not fit is dropped, and said so.
 */
static struct {
	libbpf_print_fn_t print;	/* the function holding replaced */
	int holding;
	size_t used;
	int dropped;
	char buf[16384];
} tg_held;

static int tg_hold_print(enum libbpf_print_level level, const char *fmt,
			 va_list ap)
{
	int n;

	/* The caller's function decides on debug messages as before. */
	if (level == LIBBPF_DEBUG)
		return tg_held.print ? tg_held.print(level, fmt, ap) : 0;
	if (tg_held.used + 2 >= sizeof(tg_held.buf)) {
		tg_held.dropped = 1;
		return 0;
	}
	tg_held.buf[tg_held.used] = (char)('0' + level);
	n = vsnprintf(tg_held.buf + tg_held.used + 1,
		      sizeof(tg_held.buf) - tg_held.used - 1, fmt, ap);
	if (n < 0)
		return 0;
	if ((size_t)n >= sizeof(tg_held.buf) - tg_held.used - 1) {
		tg_held.dropped = 1;
		n = (int)strlen(tg_held.buf + tg_held.used + 1);
	}
	tg_held.used += (size_t)n + 2;
	return n;
}

static void tg_hold_start(void)
{
	if (tg_held.holding)
		return;
	tg_held.used = 0;
	tg_held.dropped = 0;
	tg_held.print = libbpf_set_print(tg_hold_print);
	tg_held.holding = 1;
}

static void tg_hold_stop(void)
{
	if (tg_held.holding)
		libbpf_set_print(tg_held.print);
	tg_held.holding = 0;
}

static int tg_forward(libbpf_print_fn_t fn, enum libbpf_print_level level,
		      const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = fn(level, fmt, ap);
	va_end(ap);
	return n;
}

/* What was held, through the caller's print function; or nothing. */
static void tg_hold_release(int print)
{
	size_t off = 0, n;

	while (print && tg_held.print && off < tg_held.used) {
		n = strlen(tg_held.buf + off + 1);
		tg_forward(tg_held.print, (enum libbpf_print_level)
			   (tg_held.buf[off] - '0'), "%s",
			   tg_held.buf + off + 1);
		off += n + 2;
	}
	if (print && tg_held.print && tg_held.dropped)
		tg_forward(tg_held.print, LIBBPF_WARN,
			   "libbpf: (more messages were dropped)\n");
	tg_held.used = 0;
	tg_held.dropped = 0;
}

int tg_verifier_arm(struct tg_verifier *v, struct bpf_object *obj,
		    int verbose)
{
	size_t size = verbose >= 2 ? TG_VLOG_FULL : TG_VLOG_STATS;
	__u32 level = verbose >= 2 ? TG_VLEVEL_FULL : TG_VLEVEL_STATS;
	struct bpf_program *prog;
	struct tg_vprog *p;
	size_t n = 0;
	int err;

	memset(v, 0, sizeof(*v));
	v->verbose = verbose;
	snprintf(v->obj_name, sizeof(v->obj_name), "%s",
		 bpf_object__name(obj));
	bpf_object__for_each_program(prog, obj)
		n++;
	v->progs = calloc(n ? n : 1, sizeof(*v->progs));
	if (!v->progs)
		return -ENOMEM;
	bpf_object__for_each_program(prog, obj) {
		p = &v->progs[v->n++];
		snprintf(p->name, sizeof(p->name), "%s",
			 bpf_program__name(prog));
		tg_verifier_parse(NULL, &p->st);
		p->insns = -1;
		if (!bpf_program__autoload(prog)) {
			p->skipped = 1;
			continue;
		}
		p->log = malloc(size);
		if (!p->log) {
			tg_verifier_free(v);
			return -ENOMEM;
		}
		p->log[0] = 0;
		p->log_size = size;
		if (bpf_program__set_log_buf(prog, p->log, size) ||
		    bpf_program__set_log_level(prog, level)) {
			err = -errno;
			tg_verifier_free(v);
			return err;
		}
	}
	if (!verbose)
		tg_hold_start();
	return 0;
}

static void tg_print_log(const struct tg_vprog *p)
{
	size_t len = strlen(p->log);

	msg_info("%s: the verifier's log (%zu bytes%s%s):", p->name, len,
		 p->overflow ? ", cut short" : "",
		 p->log_size < TG_VLOG_FULL ? "; -vv adds the instructions "
		 "of the path it refused" : "");
	fflush(stderr);
	fwrite(p->log, 1, len, stderr);
	if (len && p->log[len - 1] != '\n')
		fputc('\n', stderr);
	msg_info("%s: end of the verifier's log", p->name);
}

/* The program the verifier refused, as the DESCRIPTION above says. */
static void tg_find_refused(struct tg_verifier *v)
{
	const struct tg_vprog *p;
	char line[TG_VREASON_MAX];
	size_t i;

	for (i = v->n; i-- > 0;) {
		p = &v->progs[i];
		if (p->skipped || p->loaded || !p->log || !p->log[0])
			continue;
		if (p->overflow && v->err == -ENOSPC) {
			v->refused = p;
			snprintf(v->reason, sizeof(v->reason), "its verifier "
				 "log outgrew its %lu MiB buffer, and the kernel "
				 "refuses a program whose log it cannot write "
				 "whole%s", (unsigned long)(p->log_size >> 20),
				 v->verbose >= 2 ? " (run with -v rather than "
				 "-vv)" : "");
			snprintf(v->brief, sizeof(v->brief),
				 "verifier log too long for its buffer");
			return;
		}
		if (!p->st.too_large &&
		    !(p->st.processed > p->st.limit && p->st.limit > 0) &&
		    !tg_verifier_error(p->log, line, sizeof(line)))
			return;	/* verified: the failure came after it */
		v->refused = p;
		tg_verifier_reason(p->log, &p->st, 0, v->reason,
				   sizeof(v->reason));
		tg_verifier_reason(p->log, &p->st, 1, v->brief,
				   sizeof(v->brief));
		return;
	}
}

void tg_verifier_done(struct tg_verifier *v, struct bpf_object *obj, int err)
{
	struct bpf_prog_info info;
	struct bpf_program *prog;
	struct tg_vprog *p;
	__u32 len;
	size_t i = 0;
	int fd;

	tg_hold_stop();
	v->err = err;
	bpf_object__for_each_program(prog, obj) {
		if (i >= v->n)
			break;
		p = &v->progs[i++];
		if (p->skipped)
			continue;
		fd = bpf_program__fd(prog);
		p->loaded = fd >= 0;
		if (p->log) {
			tg_verifier_parse(p->log, &p->st);
			p->overflow = strlen(p->log) + 1 >= p->log_size;
		}
		p->insns = p->st.processed;
		memset(&info, 0, sizeof(info));
		len = sizeof(info);
		/* verified_insns came with Linux 5.16; the log has it too. */
		if (p->loaded && bpf_obj_get_info_by_fd(fd, &info, &len) == 0 &&
		    info.verified_insns)
			p->insns = info.verified_insns;
	}
	if (err)
		tg_find_refused(v);
	for (i = 0; i < v->n; i++) {
		p = &v->progs[i];
		if (p->log && p->log[0] &&
		    (v->verbose >= 2 || (v->verbose && p == v->refused)))
			tg_print_log(p);
	}
	tg_hold_release(!v->refused);
	/*
	 * libbpf keeps the pointers (it refuses to forget them once the
	 * object is loaded) but never reads them after the load.
	 */
	for (i = 0; i < v->n; i++) {
		free(v->progs[i].log);
		v->progs[i].log = NULL;
	}
}

/* n, or "-" when unknown, with thousands separators or without. */
static const char *tg_vnum(long long n, int commas, char *buf, size_t len)
{
	if (n < 0)
		snprintf(buf, len, "-");
	else if (commas)
		tg_verifier_commas((unsigned long long)n, buf, len);
	else
		snprintf(buf, len, "%lld", n);
	return buf;
}

void tg_verifier_report(const struct tg_verifier *v)
{
	char insns[32], limit[32], total[32], peak[32], share[96] = "";
	const struct tg_vprog *p;
	size_t i;

	if (!v->verbose)
		return;
	for (i = 0; i < v->n; i++) {
		p = &v->progs[i];
		if (!p->loaded)
			continue;
		if (p->st.limit <= 0 || p->insns < 0)
			share[0] = 0;
		else if (p->insns * 100 < p->st.limit)
			snprintf(share, sizeof(share), ", under 1%% of this "
				 "kernel's limit of %s",
				 tg_vnum(p->st.limit, 1, limit, sizeof(limit)));
		else
			snprintf(share, sizeof(share), ", %lld%% of this "
				 "kernel's limit of %s",
				 p->insns * 100 / p->st.limit,
				 tg_vnum(p->st.limit, 1, limit, sizeof(limit)));
		msg_info("%s: verified: %s instructions processed%s; %s "
			 "states in all, %s at peak", p->name,
			 tg_vnum(p->insns, 1, insns, sizeof(insns)), share,
			 tg_vnum(p->st.total_states, 1, total, sizeof(total)),
			 tg_vnum(p->st.peak_states, 1, peak, sizeof(peak)));
	}
}

void tg_verifier_fatal(const struct tg_verifier *v)
{
	if (v->refused)
		msg_fatal("%s: %s", v->refused->name, v->reason);
	msg_fatal("cannot load the BPF object %s: %s", v->obj_name,
		  strerror(v->err < 0 ? -v->err : v->err));
}

void tg_verifier_free(struct tg_verifier *v)
{
	size_t i;

	tg_hold_stop();
	tg_hold_release(1);
	for (i = 0; i < v->n; i++)
		free(v->progs[i].log);
	free(v->progs);
	v->progs = NULL;
	v->n = 0;
	v->refused = NULL;
}

/* One row of the check's table. */
struct tg_vrow {
	int done;			/* measured, or refused */
	int refused;
	long long insns, total, peak;
	char brief[TG_VREASON_MAX];
};

/* The index of a program by name in the first variant's order. */
static long tg_vindex(char (*names)[64], size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return (long)i;
	return -1;
}

/*
 * One variant: load until no program is refused, each time without
 * those refused before. Every load either succeeds or refuses one more
 * program, so there are at most n + 1 of them.
 */
static void tg_vcheck_variant(const struct tg_vcheck_ops *ops, int audit,
			      char (*names)[64], size_t n,
			      struct tg_vrow *rows)
{
	struct tg_verifier v;
	struct bpf_program *prog;
	struct bpf_object *obj;
	size_t i, attempt;
	long k;
	int err;

	for (attempt = 0; attempt <= n; attempt++) {
		obj = ops->open(ops->ctx, audit);
		bpf_object__for_each_program(prog, obj) {
			k = tg_vindex(names, n, bpf_program__name(prog));
			if (k >= 0 && rows[k].refused)
				bpf_program__set_autoload(prog, false);
		}
		err = tg_verifier_arm(&v, obj, ops->verbose);
		if (err < 0)
			msg_fatal("cannot set up the verifier's logs: %s",
				  strerror(-err));
		/*
		 * bpf_object__load(), not the skeleton's load: nothing here
		 * uses the maps, whose memory mapping is all the skeleton
		 * adds.
		 */
		err = bpf_object__load(obj);
		tg_verifier_done(&v, obj, err);
		k = v.refused ? tg_vindex(names, n, v.refused->name) : -1;
		if (err && (k < 0 || rows[k].refused))
			tg_verifier_fatal(&v);
		for (i = 0; i < v.n; i++) {
			const struct tg_vprog *p = &v.progs[i];
			struct tg_vrow *r;

			k = tg_vindex(names, n, p->name);
			if (k < 0 || (err && p != v.refused) ||
			    (!err && !p->loaded))
				continue;
			r = &rows[k];
			r->done = 1;
			r->refused = p == v.refused;
			r->insns = p->insns;
			r->total = p->st.total_states;
			r->peak = p->st.peak_states;
			snprintf(r->brief, sizeof(r->brief), "%s",
				 r->refused ? v.brief : "");
		}
		tg_verifier_free(&v);
		ops->close(ops->ctx);
		if (!err)
			return;
	}
}

int tg_verifier_check(const struct tg_vcheck_ops *ops,
		      unsigned long long budget, FILE *out)
{
	char (*names)[64];
	struct tg_vrow *rows[2];
	struct bpf_program *prog;
	struct bpf_object *obj;
	char a[32], b[32], c[32];
	unsigned passed = 0, failed = 0;
	struct utsname u;
	size_t n = 0, i;
	int audit;

	/* The programs, in object order, as the first variant has them. */
	obj = ops->open(ops->ctx, 0);
	bpf_object__for_each_program(prog, obj)
		n++;
	names = calloc(n ? n : 1, sizeof(*names));
	rows[0] = calloc(n ? n : 1, sizeof(*rows[0]));
	rows[1] = calloc(n ? n : 1, sizeof(*rows[1]));
	if (!names || !rows[0] || !rows[1])
		msg_fatal("out of memory");
	i = 0;
	bpf_object__for_each_program(prog, obj)
		snprintf(names[i++], sizeof(names[0]), "%s",
			 bpf_program__name(prog));
	ops->close(ops->ctx);

	for (audit = 0; audit <= 1; audit++)
		tg_vcheck_variant(ops, audit, names, n, rows[audit]);

	if (uname(&u) < 0)
		snprintf(u.release, sizeof(u.release), "unknown");
	fprintf(out, "kernel %s\n", u.release);
	fprintf(out, "%-21s %-5s%11s%14s%13s  %s\n", "program", "audit",
		"insns", "total_states", "peak_states", "result");
	for (i = 0; i < n; i++) {
		for (audit = 0; audit <= 1; audit++) {
			const struct tg_vrow *r = &rows[audit][i];
			int ok;

			if (!r->done)
				continue;	/* not loaded (autoload off) */
			ok = !r->refused && r->insns >= 0 &&
			     (unsigned long long)r->insns <= budget;
			if (ok)
				passed++;
			else
				failed++;
			fprintf(out, "%-21s %-5s%11s%14s%13s  %s%s\n",
				names[i], audit ? "on" : "off",
				tg_vnum(r->insns, 0, a, sizeof(a)),
				tg_vnum(r->total, 0, b, sizeof(b)),
				tg_vnum(r->peak, 0, c, sizeof(c)),
				r->refused ? "refused: " :
				ok ? "ok" : "over budget",
				r->refused ? r->brief : "");
		}
	}
	fprintf(out, "%u passed, %u failed\n", passed, failed);
	fflush(out);
	free(names);
	free(rows[0]);
	free(rows[1]);
	return failed ? 1 : 0;
}
