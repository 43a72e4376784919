// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_pin - tlsguard in the kernel beyond the agent (--pin)
 * SYNOPSIS
 *	#include "tg_agent.h"
 *
 *	void	tg_pin_prepare(struct tg_agent *ag);
 *	void	tg_pin_adopt(struct tg_agent *ag);
 *	struct bpf_link *tg_pin_link(struct bpf_program *prog, const char *pin);
 *	void	tg_unpin(struct tg_agent *ag);
 * DESCRIPTION
 *	tg_pin_prepare(), before the object is loaded, gives every map a
 *	pin under TG_PIN_DIR and sets ag->adopted when a previous agent
 *	left its state there (libbpf then reuses those maps).
 *
 *	tg_pin_adopt(), once loaded, takes over that state: the previous
 *	agent's free slots are forgotten (its slots died with it) and the
 *	flows it held are destroyed, so that the MTA retries them at once.
 *
 *	tg_pin_link() makes the cgroup link pinned at pin (tg_sockops',
 *	tg_connect4's, tg_connect6's) run this agent's prog; it returns the
 *	link when it did, NULL when there is no link to update (the caller
 *	attaches afresh, then pins the new link).
 *
 *	tg_unpin() (tlsguardctl detach) removes every pin: nothing of
 *	tlsguard stays in the kernel once the agent exits.
 * DIAGNOSTICS
 *	A directory or pin that cannot be made is fatal.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tlsguard.skel.h"
#include "tg_agent.h"
#include "tg_log.h"

/*
 * --pin: every map of tlsguard's lives under TG_PIN_DIR, so that the
 * kernel goes on enforcing when the agent is gone (the sk_msg and sk_skb
 * programs belong to the pinned sockhash, the sock_ops and connect
 * programs to the pinned cgroup links). A held flow then finds no live
 * injection slot and is failed closed: the MTA defers. A new agent
 * adopts the pinned maps (libbpf reuses a map whose pin exists) and the
 * flows in them.
 */
void tg_pin_prepare(struct tg_agent *ag)
{
	struct bpf_map *map;
	char path[256];

	if (mkdir(TG_PIN_DIR, 0700) < 0 && errno != EEXIST)
		msg_fatal("mkdir %s: %s", TG_PIN_DIR, strerror(errno));
	ag->adopted = access(TG_PIN_DIR "/tg_flows", F_OK) == 0;
	bpf_object__for_each_map(map, ag->skel->obj) {
		if (strncmp(bpf_map__name(map), "tg_", 3) != 0)
			continue;	/* .rodata: per program, not shared */
		snprintf(path, sizeof(path), "%s/%s", TG_PIN_DIR,
			 bpf_map__name(map));
		if (bpf_map__set_pin_path(map, path))
			msg_fatal("cannot pin %s: %s", path, strerror(errno));
	}
}

/*
 * Flows the previous agent held wait for replies that will never come
 * (its injection slots died with it): destroy them, so that the MTA
 * defers at once instead of waiting for its own timeout.
 */
static void tg_adopt_flows(struct tg_agent *ag)
{
	unsigned long n = tg_kill_state(&ag->kill,
					bpf_map__fd(ag->skel->maps.tg_flows),
					TG_FS_DIVERTED);

	if (n)
		msg_info("destroyed %lu held connection(s) of the previous "
			 "agent; the MTA retries them", n);
}

/* tlsguardctl detach: nothing of tlsguard stays in the kernel. */
void tg_unpin(struct tg_agent *ag)
{
	unlink(TG_PIN_LINK);
	unlink(TG_PIN_CONNECT4);
	unlink(TG_PIN_CONNECT6);
	bpf_object__unpin_maps(ag->skel->obj, NULL);
	if (rmdir(TG_PIN_DIR) < 0 && errno != ENOENT)
		msg_warn("rmdir %s: %s", TG_PIN_DIR, strerror(errno));
}

void tg_pin_adopt(struct tg_agent *ag)
{
	__u32 stale;

	/* The old agent's slots died with it. */
	while (bpf_map_lookup_and_delete_elem(
		       bpf_map__fd(ag->skel->maps.tg_free_slots), NULL,
		       &stale) == 0)
		;
	msg_info("adopted the state pinned under %s", TG_PIN_DIR);
	tg_adopt_flows(ag);
}

struct bpf_link *tg_pin_link(struct bpf_program *prog, const char *pin)
{
	struct bpf_link *link = bpf_link__open(pin);

	if (link && bpf_link__update_program(link, prog) == 0)
		return link;
	bpf_link__destroy(link);
	return NULL;
}
