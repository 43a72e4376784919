// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_pin - tlsguard in the kernel beyond the agent, and upgrades
 *	without a gap
 * SYNOPSIS
 *	#include "tg_agent.h"
 *
 *	void	tg_pin_prepare(struct tg_agent *ag);
 *	void	tg_pin_adopt(struct tg_agent *ag);
 *	struct bpf_link *tg_pin_link(struct tg_agent *ag,
 *				     struct bpf_program *prog, const char *pin);
 *	void	tg_pin_leave(struct tg_agent *ag);
 *	int	tg_pin_seen(const struct tg_agent *ag, int *fds, unsigned max);
 *	void	tg_pin_drain(struct tg_agent *ag);
 *	unsigned tg_pin_gen_conns(const struct tg_gen *g);
 *	void	tg_unpin(struct tg_agent *ag);
 *	void	tg_pin_path(const struct tg_agent *ag, const char *name,
 *			    char *out, size_t len);
 * DESCRIPTION
 *	The pins live under pin_dir (on a bpf filesystem): the three cgroup
 *	links (TG_PIN_LINK, TG_PIN_CONNECT4, TG_PIN_CONNECT6) at its top,
 *	the maps in a generation directory pin_dir/L<digest>, the digest
 *	being that of the maps' layout (every map's name, type, key and
 *	value size, room and flags, and TG_LAYOUT_VERSION). A build, or a
 *	setting such as max_flows, that gives the maps another layout has
 *	another generation.
 *
 *	tg_pin_prepare(), before the object is loaded, makes pin_dir (a
 *	directory of its own on a bpf filesystem: tg_pindir.h), locks it for
 *	this agent (flock, on ag->pin_fd, released when the process ends),
 *	gives every map a pin in this agent's generation directory and sets
 *	ag->adopted when a previous agent left that generation there (libbpf
 *	then reuses those maps). A start that ends before its cgroup links
 *	are pinned or updated removes that generation again, unless it was
 *	adopted: nothing guarded with it. Every other generation found (and
 *	the maps a version before generations pinned at the top) is
 *	recorded as draining.
 *
 *	tg_pin_adopt(), once loaded, takes over that state: the previous
 *	agents' free slots are forgotten (their slots died with them) and
 *	the flows they held are destroyed, so that the MTA retries them at
 *	once; for a draining generation this is done through the old flow
 *	table's own BTF (its layout is not this build's).
 *
 *	tg_pin_link() makes the cgroup link pinned at pin run this agent's
 *	prog, in one step (BPF_LINK_UPDATE: the cgroup is never without a
 *	program); it returns the link when it did, NULL when there is no
 *	link to update (the caller attaches afresh, then pins the new link).
 *	A pinned link on another cgroup than ag's is fatal: that pin_dir is
 *	another tlsguardd's.
 *
 *	tg_pin_leave() (SIGTERM, SIGINT) destroys the flows this agent
 *	holds now, whose replies die with it, so that the MTA defers them
 *	at once; everything pinned, every generation, stays and goes on
 *	enforcing.
 *
 *	tg_pin_seen() stores in fds the maps, keyed by socket cookie, whose
 *	sockets are enforced: this agent's tg_flows, then each draining
 *	generation's tg_socks. It returns how many.
 *
 *	tg_pin_drain(), from the timer, removes the pins of each draining
 *	generation whose sockhash is empty: its last connection closed, its
 *	maps and sk_msg/sk_skb programs go with the pins.
 *
 *	tg_pin_gen_conns() counts the connections a draining generation
 *	still enforces (the keys of its sockhash).
 *
 *	tg_unpin() (tlsguardctl detach) removes every pin of every
 *	generation, and only tlsguard's (tg_pindir_remove()): nothing of
 *	tlsguard stays in the kernel once the agent exits.
 *
 *	tg_pin_path() writes the path of pin name under pin_dir to out.
 * DIAGNOSTICS
 *	A directory or pin that cannot be made is fatal, and so is a
 *	pin_dir that is not a directory of its own on a bpf filesystem or
 *	that another tlsguardd holds. A draining generation beyond
 *	TG_GENS_MAX is left pinned, with a warning.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "tlsguard.skel.h"
#include "tg_agent.h"
#include "tg_log.h"
#include "tg_pindir.h"

/*
 * Every map of tlsguard's lives under pin_dir, so that the kernel goes
 * on enforcing when the agent is gone (the sk_msg and sk_skb programs
 * belong to the pinned sockhash, the sock_ops and connect programs to
 * the pinned cgroup links). A held flow then finds no live injection
 * slot and is failed closed: the MTA defers. This is not a choice: a
 * daemon that detached on exit would let a guaranteed sender's next
 * mail go out in clear whenever it is stopped, killed or crashes;
 * removing tlsguard is one deliberate act, tlsguardctl detach
 * (tg_unpin(), or tlsguardctl itself with no agent).
 */
static struct tg_agent *tg_pin_owner;

static __u64 tg_layout_fnv(__u64 h, const void *p, size_t n)
{
	const unsigned char *c = p;

	while (n--)
		h = (h ^ *c++) * 0x100000001b3ULL;
	return h;
}

/* The layout digest of the opened (sized, not loaded) object. */
static __u64 tg_layout(struct bpf_object *obj)
{
	__u64 h = tg_layout_fnv(0xcbf29ce484222325ULL, "tlsguard", 8);
	__u32 v[6] = { TG_LAYOUT_VERSION };
	struct bpf_map *map;

	h = tg_layout_fnv(h, v, sizeof(v[0]));
	bpf_object__for_each_map(map, obj) {
		const char *name = bpf_map__name(map);

		if (strncmp(name, "tg_", 3) != 0)
			continue;
		v[0] = bpf_map__type(map);
		v[1] = bpf_map__key_size(map);
		v[2] = bpf_map__value_size(map);
		v[3] = bpf_map__max_entries(map);
		v[4] = bpf_map__map_flags(map);
		h = tg_layout_fnv(h, name, strlen(name) + 1);
		h = tg_layout_fnv(h, v, sizeof(v));
	}
	return h;
}

/* An older generation: dir is its directory (pin_dir when legacy). */
static void tg_gen_add(struct tg_agent *ag, const char *dir, int legacy)
{
	struct tg_gen *g;
	char p[TG_PIN_PATH + 32];

	if (ag->ngens >= TG_GENS_MAX) {
		msg_warn("%s: more than %d pinned generations; this one stays "
			 "pinned (tlsguardctl detach removes it)", dir,
			 TG_GENS_MAX);
		return;
	}
	g = &ag->gens[ag->ngens++];
	snprintf(g->dir, sizeof(g->dir), "%s", dir);
	g->legacy = legacy;
	snprintf(p, sizeof(p), "%s/tg_socks", dir);
	g->socks_fd = bpf_obj_get(p);	/* -1: nothing left to drain */
	snprintf(p, sizeof(p), "%s/tg_flows", dir);
	g->flows_fd = bpf_obj_get(p);
	g->since = time(NULL);
}

/* Every generation under pin_dir but this agent's (ag->pin_gen). */
static void tg_gens_find(struct tg_agent *ag)
{
	const char *dir = ag->opt.pin_dir;
	char p[TG_PIN_PATH];
	struct dirent *de;
	DIR *d;

	tg_pin_path(ag, "tg_socks", p, sizeof(p));
	if (access(p, F_OK) == 0)
		tg_gen_add(ag, dir, 1);	/* pinned before generations */
	d = opendir(dir);
	if (!d)
		msg_fatal("pin_dir %s: %s", dir, strerror(errno));
	while ((de = readdir(d))) {
		if (de->d_name[0] != TG_PINDIR_GEN || de->d_type != DT_DIR)
			continue;
		snprintf(p, sizeof(p), "%s/%.32s", dir, de->d_name);
		if (strcmp(p, ag->pin_gen) != 0)
			tg_gen_add(ag, p, 0);
	}
	closedir(d);
}

/*
 * A generation's pins; legacy: the maps at pin_dir's top (not the
 * links, nor the generation directories). Returns -1 on a failure.
 */
static int tg_gen_remove(const char *dir, int legacy)
{
	char err[512];

	if (tg_pindir_empty(dir, !legacy, err, sizeof(err)) == -1) {
		msg_warn("%s", err);
		return -1;
	}
	if (!legacy && rmdir(dir) < 0 && errno != ENOENT) {
		msg_warn("rmdir %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * At exit: a fresh generation that never guarded the cgroup (a start
 * that failed between loading and attaching) goes, so that a failed
 * start leaves nothing of its own; older generations and the links stay.
 * An adopted generation, or one the pinned links run, enforces: it stays.
 */
static void tg_pin_exit(void)
{
	struct tg_agent *ag = tg_pin_owner;

	if (ag && !ag->adopted && !ag->linked && !ag->detach &&
	    tg_gen_remove(ag->pin_gen, 0) == 0 && ag->ngens == 0 &&
	    access(ag->opt.pin_dir, F_OK) == 0)
		rmdir(ag->opt.pin_dir);	/* fails unless it is empty */
}

/*
 * One agent per pin_dir: a second one would take over the first's maps
 * and links under it. The lock goes with the process, however it ends;
 * the descriptor stays open until then.
 */
static void tg_pin_lock(struct tg_agent *ag, int made)
{
	const char *dir = ag->opt.pin_dir;
	char err[512];

	if (tg_pindir_check(dir, err, sizeof(err)) < 0) {
		if (made)
			rmdir(dir);
		msg_fatal("pin_dir %s", err);
	}
	ag->pin_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ag->pin_fd < 0)
		msg_fatal("pin_dir %s: %s", dir, strerror(errno));
	if (flock(ag->pin_fd, LOCK_EX | LOCK_NB) < 0)
		msg_fatal("pin_dir %s: %s", dir, errno == EWOULDBLOCK ?
			  "another tlsguardd uses it (give each its own "
			  "pin_dir)" : strerror(errno));
}

void tg_pin_prepare(struct tg_agent *ag)
{
	const char *dir = ag->opt.pin_dir;
	char path[TG_PIN_PATH + 32];
	struct bpf_map *map;
	int made = mkdir(dir, 0700) == 0;

	if (!made && errno != EEXIST)
		msg_fatal("pin_dir %s: mkdir: %s (is a bpf filesystem mounted "
			  "above it? mount -t bpf bpf /sys/fs/bpf)", dir,
			  strerror(errno));
	tg_pin_lock(ag, made);
	snprintf(ag->pin_gen, sizeof(ag->pin_gen), "%s/%c%016llx", dir,
		 TG_PINDIR_GEN, (unsigned long long)tg_layout(ag->skel->obj));
	if (mkdir(ag->pin_gen, 0700) < 0 && errno != EEXIST)
		msg_fatal("mkdir %s: %s", ag->pin_gen, strerror(errno));
	snprintf(path, sizeof(path), "%s/tg_flows", ag->pin_gen);
	ag->adopted = access(path, F_OK) == 0;
	tg_gens_find(ag);
	tg_pin_owner = ag;
	atexit(tg_pin_exit);
	bpf_object__for_each_map(map, ag->skel->obj) {
		if (strncmp(bpf_map__name(map), "tg_", 3) != 0)
			continue;	/* .rodata: per program, not shared */
		snprintf(path, sizeof(path), "%s/%s", ag->pin_gen,
			 bpf_map__name(map));
		if (bpf_map__set_pin_path(map, path))
			msg_fatal("cannot pin %s: %s", path, strerror(errno));
	}
}

/*
 * The offsets in an older generation's struct tg_flow of the fields that
 * name its socket, read from the flow table's own BTF: 0 when found.
 */
struct tg_old_flow {
	__u32 size, cookie, state, family, lport, rport, laddr, raddr;
};

static int tg_old_flow_layout(int flows_fd, struct tg_old_flow *o)
{
	static const char *const names[] = { "cookie", "state", "family",
		"lport", "rport", "laddr", "raddr" };
	struct bpf_map_info info = { 0 };
	__u32 len = sizeof(info), *off = &o->cookie;
	const struct btf_member *m;
	const struct btf_type *t;
	struct btf *btf;
	unsigned i, j, found = 0;

	if (bpf_obj_get_info_by_fd(flows_fd, &info, &len) || !info.btf_id)
		return -1;
	btf = btf__load_from_kernel_by_id(info.btf_id);
	if (!btf)
		return -1;
	t = btf__type_by_id(btf, info.btf_value_type_id);
	if (t && btf_is_struct(t)) {
		m = btf_members(t);
		for (i = 0; i < btf_vlen(t); i++, m++)
			for (j = 0; j < 7; j++)
				if (strcmp(btf__name_by_offset(btf, m->name_off),
					   names[j]) == 0) {
					off[j] = btf_member_bit_offset(t, i) / 8;
					found |= 1U << j;
				}
	}
	o->size = info.value_size;
	btf__free(btf);
	return found == 0x7f ? 0 : -1;
}

/* An older generation's held flows, destroyed by cookie and addresses. */
static unsigned long tg_gen_kill_held(struct tg_agent *ag, struct tg_gen *g)
{
	static unsigned char val[65536];
	struct tg_old_flow o;
	struct tg_flow f;
	unsigned long n = 0;
	__u64 key, next, *prev = NULL;
	__u32 state;

	if (g->flows_fd < 0 || tg_old_flow_layout(g->flows_fd, &o) < 0 ||
	    o.size > sizeof(val)) {
		msg_warn("%s: cannot read its flow table; its held flows wait "
			 "for the MTA's own timeout", g->dir);
		return 0;
	}
	while (bpf_map_get_next_key(g->flows_fd, prev, &next) == 0) {
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(g->flows_fd, &key, val))
			continue;
		memcpy(&state, val + o.state, sizeof(state));
		if (state != TG_FS_DIVERTED)
			continue;
		memset(&f, 0, sizeof(f));
		memcpy(&f.cookie, val + o.cookie, sizeof(f.cookie));
		memcpy(&f.family, val + o.family, sizeof(f.family));
		memcpy(&f.lport, val + o.lport, sizeof(f.lport));
		memcpy(&f.rport, val + o.rport, sizeof(f.rport));
		memcpy(f.laddr, val + o.laddr, sizeof(f.laddr));
		memcpy(f.raddr, val + o.raddr, sizeof(f.raddr));
		n += tg_kill_flow(&ag->kill, &f) == 0;
	}
	return n;
}

/* A generation's free slots: its agent's slots died with it. */
static void tg_forget_slots(int fd)
{
	__u64 stale[8];

	while (fd >= 0 && bpf_map_lookup_and_delete_elem(fd, NULL, stale) == 0)
		;
}

void tg_pin_adopt(struct tg_agent *ag)
{
	char p[TG_PIN_PATH + 32];
	unsigned long n;
	unsigned i;
	int fd;

	if (ag->adopted) {
		tg_forget_slots(bpf_map__fd(ag->skel->maps.tg_free_slots));
		msg_info("adopted the state pinned under %s", ag->pin_gen);
		n = tg_kill_state(&ag->kill,
				  bpf_map__fd(ag->skel->maps.tg_flows),
				  TG_FS_DIVERTED);
		if (n)
			msg_info("destroyed %lu held connection(s) of the "
				 "previous agent; the MTA retries them", n);
	}
	for (i = 0; i < ag->ngens; i++) {
		struct tg_gen *g = &ag->gens[i];

		snprintf(p, sizeof(p), "%s/tg_free_slots", g->dir);
		fd = bpf_obj_get(p);
		tg_forget_slots(fd);
		if (fd >= 0)
			close(fd);
		n = tg_gen_kill_held(ag, g);
		msg_info("pinned state of another layout under %s: its "
			 "connections drain under its own programs, new ones "
			 "are this agent's (%s)%s", g->dir, ag->pin_gen,
			 n ? "; its held connections were destroyed, the MTA "
			     "retries them" : "");
	}
}

void tg_pin_leave(struct tg_agent *ag)
{
	unsigned long n = tg_kill_state(&ag->kill,
					bpf_map__fd(ag->skel->maps.tg_flows),
					TG_FS_DIVERTED);

	if (n)
		msg_info("destroyed %lu held connection(s) as the agent exits; "
			 "the MTA retries them", n);
}

struct bpf_link *tg_pin_link(struct tg_agent *ag, struct bpf_program *prog,
			     const char *pin)
{
	struct bpf_link_info info;
	__u32 len = sizeof(info);
	struct bpf_link *link;
	struct stat st;

	if (access(pin, F_OK) < 0)
		return NULL;	/* nothing pinned: libbpf need not say so */
	link = bpf_link__open(pin);
	if (!link)
		return NULL;
	/* On cgroup v2 a cgroup's id is its directory's inode number. */
	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(bpf_link__fd(link), &info, &len) == 0 &&
	    fstat(ag->cgroup_fd, &st) == 0 &&
	    info.cgroup.cgroup_id != (__u64)st.st_ino)
		msg_fatal("pin_dir %s holds the state of a tlsguardd that "
			  "guards another cgroup (id %llu, not %s): give each "
			  "tlsguardd its own pin_dir, or remove that state "
			  "with tlsguardctl --pin-dir %s detach",
			  ag->opt.pin_dir,
			  (unsigned long long)info.cgroup.cgroup_id,
			  ag->opt.cgroup, ag->opt.pin_dir);
	if (bpf_link__update_program(link, prog) == 0)
		return link;
	bpf_link__destroy(link);
	return NULL;
}

int tg_pin_seen(const struct tg_agent *ag, int *fds, unsigned max)
{
	unsigned i, n = 0;

	if (max)
		fds[n++] = bpf_map__fd(ag->skel->maps.tg_flows);
	for (i = 0; i < ag->ngens && n < max; i++)
		if (ag->gens[i].socks_fd >= 0)
			fds[n++] = ag->gens[i].socks_fd;
	return (int)n;
}

void tg_pin_drain(struct tg_agent *ag)
{
	unsigned i = 0;
	__u64 key;

	while (i < ag->ngens) {
		struct tg_gen *g = &ag->gens[i];

		if (g->socks_fd >= 0 &&
		    bpf_map_get_next_key(g->socks_fd, NULL, &key) == 0) {
			i++;	/* a connection of its own is still open */
			continue;
		}
		if (tg_gen_remove(g->dir, g->legacy) < 0) {
			i++;
			continue;
		}
		msg_info("%s drained in %lds: its pins are removed", g->dir,
			 (long)(time(NULL) - g->since));
		if (g->socks_fd >= 0)
			close(g->socks_fd);
		if (g->flows_fd >= 0)
			close(g->flows_fd);
		*g = ag->gens[--ag->ngens];
	}
}

unsigned tg_pin_gen_conns(const struct tg_gen *g)
{
	__u64 key, next, *prev = NULL;
	unsigned n = 0;

	while (g->socks_fd >= 0 &&
	       bpf_map_get_next_key(g->socks_fd, prev, &next) == 0) {
		key = next;
		prev = &key;
		n++;
	}
	return n;
}

/* tlsguardctl detach: nothing of tlsguard stays in the kernel. */
void tg_unpin(struct tg_agent *ag)
{
	char err[512];

	if (tg_pindir_remove(ag->opt.pin_dir, err, sizeof(err)) == -1)
		msg_warn("pin_dir %s (tlsguardctl detach removes the rest)",
			 err);
}

/* See above; pin_dir is at most TG_PIN_DIR_MAX bytes (tg_settings.c). */
void tg_pin_path(const struct tg_agent *ag, const char *name, char *out,
		 size_t len)
{
	snprintf(out, len, "%s/%s", ag->opt.pin_dir, name);
}
