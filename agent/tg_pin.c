// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_pin - tlsguard in the kernel beyond the agent
 * SYNOPSIS
 *	#include "tg_agent.h"
 *
 *	void	tg_pin_prepare(struct tg_agent *ag);
 *	void	tg_pin_adopt(struct tg_agent *ag);
 *	struct bpf_link *tg_pin_link(struct tg_agent *ag,
 *				     struct bpf_program *prog, const char *pin);
 *	void	tg_pin_leave(struct tg_agent *ag);
 *	void	tg_unpin(struct tg_agent *ag);
 *	void	tg_pin_path(const struct tg_agent *ag, const char *name,
 *			    char *out, size_t len);
 * DESCRIPTION
 *	tg_pin_prepare(), before the object is loaded, makes the directory
 *	pin_dir (on a bpf filesystem), locks it for this agent (flock, on
 *	ag->pin_fd, released when the process ends), gives every map a pin
 *	under it (a start that ends before a cgroup link is pinned removes
 *	them again, unless they were adopted: nothing guarded with them) and
 *	sets ag->adopted when a previous agent left its state there
 *	(libbpf then reuses those maps).
 *
 *	tg_pin_adopt(), once loaded, takes over that state: the previous
 *	agent's free slots are forgotten (its slots died with it) and the
 *	flows it held are destroyed, so that the MTA retries them at once.
 *
 *	tg_pin_link() makes the cgroup link pinned at pin (tg_sockops',
 *	tg_connect4's, tg_connect6's) run this agent's prog; it returns the
 *	link when it did, NULL when there is no link to update (the caller
 *	attaches afresh, then pins the new link). A pinned link on another
 *	cgroup than ag's is fatal: that pin_dir is another tlsguardd's.
 *
 *	tg_pin_leave() (SIGTERM, SIGINT) destroys the flows held now, whose
 *	replies die with the agent, so that the MTA defers them at once;
 *	everything pinned stays and goes on enforcing.
 *
 *	tg_unpin() (tlsguardctl detach) removes every pin: nothing of
 *	tlsguard stays in the kernel once the agent exits.
 *
 *	tg_pin_path() writes the path of pin name under pin_dir to out.
 * DIAGNOSTICS
 *	A directory or pin that cannot be made is fatal, and so is a
 *	pin_dir that is not on a bpf filesystem or that another tlsguardd
 *	holds.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tlsguard.skel.h"
#include "tg_agent.h"
#include "tg_log.h"
#include "tg_pindir.h"

/*
 * Every map of tlsguard's lives under pin_dir, so that the
 * kernel goes on enforcing when the agent is gone (the sk_msg and sk_skb
 * programs belong to the pinned sockhash, the sock_ops and connect
 * programs to the pinned cgroup links). A held flow then finds no live
 * injection slot and is failed closed: the MTA defers. This is not a
 * choice: a daemon that detached on exit would let a guaranteed
 * sender's next mail go out in clear whenever it is stopped, killed or
 * crashes; removing tlsguard is one deliberate act, tlsguardctl
 * detach (tg_unpin(), or tlsguardctl itself with no agent). A new agent
 * adopts the pinned maps (libbpf reuses a map whose pin exists) and the
 * flows in them.
 */
static struct tg_agent *tg_pin_owner;



/*
 * At exit: a fresh state that never guarded the cgroup (a start that
 * failed between loading and attaching) goes, so that a failed start
 * leaves nothing. Adopted state, or state whose links are pinned,
 * enforces: it stays.
 */
static void tg_pin_exit(void)
{
	struct tg_agent *ag = tg_pin_owner;

	if (ag && !ag->adopted && !ag->linked && ag->skel)
		tg_unpin(ag);
}

void tg_pin_prepare(struct tg_agent *ag)
{
	const char *dir = ag->opt.pin_dir;
	struct bpf_map *map;
	char path[256], err[512];
	int made = mkdir(dir, 0700) == 0;

	if (!made && errno != EEXIST)
		msg_fatal("pin_dir %s: mkdir: %s (is a bpf filesystem mounted "
			  "above it? mount -t bpf bpf /sys/fs/bpf)", dir,
			  strerror(errno));
	if (tg_pindir_check(dir, err, sizeof(err)) < 0) {
		if (made)
			rmdir(dir);
		msg_fatal("pin_dir %s", err);
	}
	/*
	 * One agent per pin_dir: a second one would take over the first's
	 * maps and links under it. The lock goes with the process, however
	 * it ends; the descriptor stays open until then.
	 */
	ag->pin_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ag->pin_fd < 0)
		msg_fatal("pin_dir %s: %s", dir, strerror(errno));
	if (flock(ag->pin_fd, LOCK_EX | LOCK_NB) < 0)
		msg_fatal("pin_dir %s: %s", dir, errno == EWOULDBLOCK ?
			  "another tlsguardd uses it (give each its own "
			  "pin_dir)" : strerror(errno));
	tg_pin_path(ag, "tg_flows", path, sizeof(path));
	ag->adopted = access(path, F_OK) == 0;
	tg_pin_owner = ag;
	atexit(tg_pin_exit);
	bpf_object__for_each_map(map, ag->skel->obj) {
		if (strncmp(bpf_map__name(map), "tg_", 3) != 0)
			continue;	/* .rodata: per program, not shared */
		tg_pin_path(ag, bpf_map__name(map), path, sizeof(path));
		if (bpf_map__set_pin_path(map, path))
			msg_fatal("cannot pin %s: %s", path, strerror(errno));
	}
}

/*
 * Flows the previous agent held wait for replies that will never come
 * (its injection slots died with it): destroy them, so that the MTA
 * defers at once instead of waiting for its own timeout.
 */
static void tg_held_destroy(struct tg_agent *ag, const char *whose)
{
	unsigned long n = tg_kill_state(&ag->kill,
					bpf_map__fd(ag->skel->maps.tg_flows),
					TG_FS_DIVERTED);

	if (n)
		msg_info("destroyed %lu held connection(s) %s; the MTA "
			 "retries them", n, whose);
}

void tg_pin_leave(struct tg_agent *ag)
{
	tg_held_destroy(ag, "as the agent exits");
}

/* tlsguardctl detach: nothing of tlsguard stays in the kernel. */
void tg_unpin(struct tg_agent *ag)
{
	static const char *const links[] = { TG_PIN_LINK, TG_PIN_CONNECT4,
					     TG_PIN_CONNECT6 };
	char path[256];
	size_t i;

	for (i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		tg_pin_path(ag, links[i], path, sizeof(path));
		unlink(path);
	}
	bpf_object__unpin_maps(ag->skel->obj, NULL);
	if (rmdir(ag->opt.pin_dir) < 0 && errno != ENOENT)
		msg_warn("rmdir %s: %s", ag->opt.pin_dir, strerror(errno));
}

/* See above; pin_dir is at most TG_PIN_DIR_MAX bytes (tg_settings.c). */
void tg_pin_path(const struct tg_agent *ag, const char *name, char *out,
		 size_t len)
{
	snprintf(out, len, "%s/%s", ag->opt.pin_dir, name);
}

void tg_pin_adopt(struct tg_agent *ag)
{
	__u32 stale;

	/* The old agent's slots died with it. */
	while (bpf_map_lookup_and_delete_elem(
		       bpf_map__fd(ag->skel->maps.tg_free_slots), NULL,
		       &stale) == 0)
		;
	msg_info("adopted the state pinned under %s", ag->opt.pin_dir);
	tg_held_destroy(ag, "of the previous agent");
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
