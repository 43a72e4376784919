// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_recover - repair what lost kernel events would have done
 * SYNOPSIS
 *	#include "tg_agent.h"
 *
 *	void	tg_recover_lost(struct tg_agent *ag);
 * DESCRIPTION
 *	When the event ring buffer was full, the kernel dropped records
 *	(tg_metrics_watch() counts them). Two kinds matter for enforcement:
 *	a lost TG_EV_KILL leaves a flow failed closed but alive (the MTA
 *	waits for its own timeout), a lost TG_EV_CLOSE leaves an injection
 *	slot bound to a flow that is gone. tg_recover_lost() finds both
 *	from the maps themselves: every flow in state TG_FS_FAILED is
 *	destroyed, and every slot whose flow is no longer in tg_flows is
 *	renewed. It is safe to call at any time; it does nothing when there
 *	is nothing to repair.
 * DIAGNOSTICS
 *	One line when it repaired something, with the counts.
 */
#include "tg_agent.h"
#include "tg_log.h"

void tg_recover_lost(struct tg_agent *ag)
{
	unsigned long n = tg_kill_state(&ag->kill, ag->metrics.src.flows_fd,
					  TG_FS_FAILED);
	unsigned r = tg_inject_reap(&ag->ij);

	if (n || r)
		msg_info("after lost events: destroyed %lu failed "
			 "connection(s), renewed %u injection slot(s)", n, r);
}
