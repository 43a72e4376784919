/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_agent - tlsguardd's state, and the rooms that share it
 * SYNOPSIS
 *	#include "tg_agent.h"
 *
 *	tg_args.c	int	tg_parse_args(int argc, char **argv,
 *					      struct tg_opts *o,
 *					      unsigned long long *budget);
 *	tg_load.c	void	tg_load(struct tg_agent *ag);
 *			int	tg_load_check(struct tg_agent *ag,
 *					      unsigned long long budget);
 *	tg_events.c	int	tg_on_event(void *ctx, void *data, size_t len);
 *	tg_senders.c	void	tg_senders_stat(struct tg_agent *ag);
 *			int	tg_senders_changed(const struct tg_agent *ag);
 *			int	tg_sync_senders(struct tg_agent *ag,
 *						const struct tg_policy *old,
 *						const struct tg_policy *pol);
 *			int	tg_reload(struct tg_agent *ag, char *err,
 *					  size_t errlen);
 *			int	tg_sender_change(struct tg_agent *ag, int add,
 *						 const char *entry, char *out,
 *						 size_t len);
 *			int	tg_sender_check(struct tg_agent *ag,
 *						const char *addr, char *out,
 *						size_t len);
 *	tg_control.c	void	tg_ctl_serve(struct tg_agent *ag);
 *	tg_pin.c	void	tg_pin_prepare(struct tg_agent *ag);
 *			void	tg_pin_adopt(struct tg_agent *ag);
 *			struct bpf_link *tg_pin_link(struct tg_agent *ag,
 *						     struct bpf_program *prog,
 *						     const char *pin);
 *			void	tg_pin_leave(struct tg_agent *ag);
 *			int	tg_pin_seen(const struct tg_agent *ag,
 *					    int *fds, unsigned max);
 *			void	tg_pin_drain(struct tg_agent *ag);
 *			unsigned tg_pin_gen_conns(const struct tg_gen *g);
 *			void	tg_pin_path(const struct tg_agent *ag,
 *					    const char *name, char *out,
 *					    size_t len);
 *			void	tg_unpin(struct tg_agent *ag);
 *	tg_recover.c	void	tg_recover_lost(struct tg_agent *ag);
 *	tg_mta.c	void	tg_mta_read(struct tg_agent *ag, int starting);
 *	tg_pgsql.c, tg_pgsnap.c: the senders from PostgreSQL (tg_pgsql.h).
 * DESCRIPTION
 *	tlsguardd.c starts the daemon and runs its event loop; each room
 *	serves one kind of event or request, on the one struct tg_agent,
 *	from that loop, one at a time: no locks. Each file's header states
 *	its contract.
 */
#ifndef TG_AGENT_H
#define TG_AGENT_H

#include <stddef.h>
#include <sys/stat.h>
#include <time.h>

#include "tlsguard.h"
#include "tg_audit.h"
#include "tg_config.h"
#include "tg_inject.h"
#include "tg_kill.h"
#include "tg_metrics.h"
#include "tg_mx.h"
#include "tg_policy.h"
#include "tg_routes.h"
#include "tg_stabmap.h"
#include "tg_uprobe.h"

struct bpf_link;
struct tg_pgsql;
struct bpf_program;

/* The cgroup links' pins, under pin_dir (the maps' are their names). */
#define TG_PIN_LINK	"tg_sockops_link"
#define TG_PIN_CONNECT4	"tg_connect4_link"
#define TG_PIN_CONNECT6	"tg_connect6_link"
#define TG_PIN_PATH	256	/* room for a generation's directory */
#define TG_GENS_MAX	8	/* older generations drained at once */

/* An older generation of pinned maps, draining (tg_pin.c). */
struct tg_gen {
	char dir[TG_PIN_PATH];
	int legacy;		/* maps at pin_dir's top: before generations */
	int socks_fd;		/* its tg_socks: empty once drained; -1 if gone */
	int flows_fd;		/* its tg_flows, read through its own BTF */
	time_t since;		/* when this agent found it */
};

/*
 * --check-verifier's default budget: instructions processed per program.
 * Far below the kernel's limit (1,000,000), because one program's cost
 * differs by several times between kernel builds: a program must pass
 * here on every kernel it is tested on to load on those it is not.
 */
#define TG_VERIFIER_BUDGET 150000ULL

struct tg_agent {
	struct tg_opts opt;
	struct tlsguard *skel;
	struct bpf_link *sockops;
	struct bpf_link *connect4; /* tg_connect4, tg_connect6 */
	struct bpf_link *connect6;
	struct ring_buffer *rb;
	struct tg_inject ij;
	struct tg_uprobes uprobes;
	struct tg_kill kill;
	struct tg_mx mx;
	struct tg_audit audit;
	struct tg_metrics metrics;
	char cgroup_path[4096];
	int timer_fd;
	int flush_fd;			/* the audit timer, -1 without the trail */
	struct tg_policy policies[2];
	struct tg_stab stab;		/* tg_senders, as the agent writes it */
	const struct tg_policy *policy;	/* one of policies[] */
	int cgroup_fd;
	int epfd;
	int sigfd;
	int ctl_fd;
	int msg_attached;
	int skb_attached;
	int adopted;		/* found its generation's pinned state */
	int pin_fd;		/* pin_dir, locked while the agent runs */
	int linked;		/* a pinned cgroup link runs this generation */
	char pin_gen[TG_PIN_PATH]; /* this agent's maps' directory */
	struct tg_gen gens[TG_GENS_MAX]; /* older generations, draining */
	unsigned ngens;
	struct stat senders_st;	/* the senders file as last read */
	int detach;		/* tlsguardctl detach: remove the pins too */
	time_t no_slot_warned;
	struct tg_routes routes; /* the MTA's, as last read */
	struct tg_pgsql *pg;	/* senders from PostgreSQL; NULL: a file */
};

extern const char tg_senders_unfit[];

int tg_parse_args(int argc, char **argv, struct tg_opts *o,
		  unsigned long long *budget);

int tg_on_event(void *ctx, void *data, size_t len);

void tg_load(struct tg_agent *ag);
int tg_load_check(struct tg_agent *ag, unsigned long long budget);
void tg_senders_stat(struct tg_agent *ag);
int tg_senders_changed(const struct tg_agent *ag);
int tg_sync_senders(struct tg_agent *ag, const struct tg_policy *old,
		    const struct tg_policy *pol);
int tg_reload(struct tg_agent *ag, char *err, size_t errlen);
int tg_sender_change(struct tg_agent *ag, int add, const char *entry,
		     char *out, size_t len);
int tg_sender_check(struct tg_agent *ag, const char *addr, char *out,
		    size_t len);

void tg_ctl_serve(struct tg_agent *ag);

void tg_pin_prepare(struct tg_agent *ag);
void tg_pin_adopt(struct tg_agent *ag);
struct bpf_link *tg_pin_link(struct tg_agent *ag, struct bpf_program *prog,
			     const char *pin);
void tg_pin_leave(struct tg_agent *ag);
int tg_pin_seen(const struct tg_agent *ag, int *fds, unsigned max);
void tg_pin_drain(struct tg_agent *ag);
unsigned tg_pin_gen_conns(const struct tg_gen *g);
void tg_pin_path(const struct tg_agent *ag, const char *name, char *out,
		 size_t len);
void tg_unpin(struct tg_agent *ag);

void tg_recover_lost(struct tg_agent *ag);

void tg_mta_read(struct tg_agent *ag, int starting);

#endif /* TG_AGENT_H */
