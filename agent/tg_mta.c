// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_mta - what tlsguardd reads of the MTA's own settings
 * SYNOPSIS
 *	#include "tg_agent.h"
 *
 *	void	tg_mta_read(struct tg_agent *ag, int starting);
 * DESCRIPTION
 *	tg_mta_read() reads the Postfix instance of postfix_config (none
 *	when it is empty) at start and at each reload (tg_routes.h): its
 *	routes, and its recipient_delimiter.
 *
 *	Each route to a port tlsguard does not guard is logged as one
 *	"warning:" line naming the setting and its value, and counted in
 *	"tlsguardctl status" and the metrics. With unguarded_routes =
 *	refuse, tlsguardd does not start while there is one, nor when the
 *	settings cannot be read (a reload only warns: the guard already
 *	runs, and stopping it would guard nothing).
 *
 *	address_delimiters = postfix takes the delimiters from
 *	recipient_delimiter ("+" when Postfix is not read); they are set
 *	for the agent's parsers and, at start, for the kernel's (the BPF
 *	programs' .rodata: a change needs a restart, which a reload says).
 *	The exempt list's keys are computed again with them.
 */
#include <stdio.h>
#include <string.h>

#include "tg_agent.h"
#include "tg_log.h"
#include "tg_mailaddr.h"

/* The delimiters in force: "" for none. */
static const char *tg_mta_delims(const struct tg_agent *ag)
{
	const char *d = ag->opt.delimiters;

	if (!strcmp(d, "none"))
		return "";
	if (strcmp(d, "postfix"))
		return d;
	return ag->routes.read ? ag->routes.delims : "+";
}

void tg_mta_read(struct tg_agent *ag, int starting)
{
	int refuse = !strcmp(ag->opt.unguarded_routes, "refuse");
	struct tg_routes *rt = &ag->routes;
	char err[600], old[64], exempt[TG_SETTING_MAX];
	unsigned i;

	snprintf(old, sizeof(old), "%s", tg_mta_delims(ag));
	if (!ag->opt.postfix_config[0]) {
		memset(rt, 0, sizeof(*rt));
		snprintf(rt->why, sizeof(rt->why), "postfix_config is none");
	} else if (tg_routes_read(rt, ag->opt.postfix_config, ag->opt.ports,
				  ag->opt.nports, ag->opt.tls_ports,
				  ag->opt.ntls_ports) < 0) {
		if (refuse && starting)
			msg_fatal("cannot read the MTA's routes "
				  "(unguarded_routes = refuse): %s",
				  rt->why);
		msg_warn("the MTA's routes are not checked: %s", rt->why);
	}
	for (i = 0; i < rt->n; i++) {
		const struct tg_route *r = &rt->r[i];

		if (r->guarded)
			continue;
		msg_warn("postfix %s: %s = %s: mail on this route goes to "
			 "port %u%s, which tlsguard does not guard (%s): a "
			 "guaranteed sender's mail leaves there unchecked",
			 rt->dir, r->setting, r->value, r->port,
			 r->wrapper ? " in TLS wrapper mode" : "",
			 r->wrapper ? "smtps_ports" : "smtp_ports");
	}
	if (rt->dropped)
		msg_warn("postfix %s: %u more routes not checked", rt->dir,
			 rt->dropped);
	if (rt->unread[0])
		msg_info("postfix %s: tables that cannot be listed are not "
			 "checked for routes: %s",
			 rt->dir, rt->unread);
	ag->metrics.src.unguarded_routes = rt->unguarded + rt->dropped;
	ag->metrics.src.routes_read = rt->read;
	if (refuse && starting && (rt->unguarded || rt->dropped))
		msg_fatal("%u route(s) of the MTA go to ports tlsguard does "
			  "not guard, and unguarded_routes = refuse: guard "
			  "their ports (smtp_ports, smtps_ports) or change "
			  "the routes",
			  rt->unguarded + rt->dropped);
	if (starting) {
		if (tg_delims_set(tg_mta_delims(ag)) < 0)
			msg_fatal("address delimiters \"%s\": not all of them "
				  "can be delimiters",
				  tg_mta_delims(ag));
		/* The exempt keys, with these delimiters. */
		snprintf(exempt, sizeof(exempt), "%s", ag->opt.exempt_text);
		if (exempt[0] && tg_config_set(&ag->opt, "exempt", exempt, err,
					       sizeof(err)) < 0)
			msg_fatal("exempt: %s", err);
		msg_debug("address delimiters: \"%s\"", tg_mta_delims(ag));
	} else if (strcmp(old, tg_mta_delims(ag))) {
		msg_warn("the address delimiters are now \"%s\" (were \"%s\"): "
			 "restart tlsguardd to apply them",
			 tg_mta_delims(ag), old);
		/* the ones in force stay, in the kernel and here */
		snprintf(rt->delims, sizeof(rt->delims), "%s", old);
	}
}
