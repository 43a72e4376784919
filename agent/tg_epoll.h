/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_epoll - the tags of tlsguardd's event loop
 * SYNOPSIS
 *	#include "tg_epoll.h"
 *
 *	int	tg_epoll_add(int epfd, int fd, __u64 tag);
 * DESCRIPTION
 *	One epoll set serves tlsguardd (see tlsguardd.c, tg_run()). The
 *	data of each registered descriptor is a tag in the high 32 bits,
 *	which names the room that serves it, and an index in the low 32
 *	(an injection slot, a metrics client). The tags are listed here,
 *	once.
 *
 *	tg_epoll_add() registers fd for reading under tag; 0 or -1 (errno).
 */
#ifndef TG_EPOLL_H
#define TG_EPOLL_H

#include <sys/epoll.h>
#include <linux/types.h>

#define TG_EP_SLOT	(1ULL << 32)	/* tg_inject: a slot's far end */
#define TG_EP_RINGBUF	(2ULL << 32)	/* tg_events: the ring buffer */
#define TG_EP_SIGNAL	(3ULL << 32)	/* SIGTERM, SIGINT, SIGHUP */
#define TG_EP_CTL	(4ULL << 32)	/* tg_control: the control socket */
#define TG_EP_TIMER	(5ULL << 32)	/* the periodic timer */
#define TG_EP_MX	(6ULL << 32)	/* tg_mx: DNS and probe answers */
#define TG_EP_METRICS	(7ULL << 32)	/* tg_metrics: listener, clients */
#define TG_EP_PGSQL	(8ULL << 32)	/* tg_pgsql: 0 the socket, 1 timer */

#define TG_EP_TAG(data)	((data) & ~0xffffffffULL)
#define TG_EP_INDEX(data) ((__u32)(data))

static inline int tg_epoll_add(int epfd, int fd, __u64 tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

#endif /* TG_EPOLL_H */
