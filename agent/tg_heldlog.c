// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_heldlog - held messages' log lines (see tg_heldlog.h)
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <netlink/netlink.h>
#include <netlink/msg.h>
#include <netlink/idiag/idiagnl.h>

#include "tg_heldlog.h"
#include "tg_kill.h"
#include "tg_log.h"
#include "tg_names.h"

void tg_heldlog_mail(const char *name, const char *sender,
		     const struct tg_resp *r)
{
	msg_info("%s: from=<%s>: held: %u %s %s", name, sender, r->code,
		 r->dsn, r->text);
}

/* The inode of the flow's socket, by sock_diag's exact lookup; 0: none. */
static unsigned long tg_flow_inode(const struct tg_flow *f)
{
	struct inet_diag_req_v2 req;
	struct nl_sock *nl = nl_socket_alloc();
	struct sockaddr_nl peer;
	unsigned char *buf = NULL;
	unsigned long ino = 0;
	struct nlmsghdr *h;
	struct nl_msg *msg;
	int n;

	if (!nl)
		return 0;
	if (idiagnl_connect(nl) < 0)
		goto out;
	tg_diag_req(&req, f);
	msg = nlmsg_alloc_simple(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST);
	if (!msg)
		goto out;
	n = nlmsg_append(msg, &req, sizeof(req), NLMSG_ALIGNTO);
	if (n == 0)
		n = nl_send_auto(nl, msg);
	nlmsg_free(msg);
	if (n < 0)
		goto out;
	n = nl_recv(nl, &peer, &buf, NULL);
	h = (struct nlmsghdr *)buf;
	if (n > 0 && nlmsg_ok(h, n) && h->nlmsg_type == SOCK_DIAG_BY_FAMILY &&
	    h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
		ino = ((struct inet_diag_msg *)nlmsg_data(h))->idiag_inode;
	free(buf);
out:
	nl_socket_free(nl);
	return ino;
}

/* Whether process pid has a descriptor on socket:[ino]. */
static int tg_pid_has(const char *pid, const char *want)
{
	char dir[64], path[320], link[64];
	struct dirent *de;
	int found = 0;
	ssize_t n;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%s/fd", pid);
	d = opendir(dir);
	if (!d)
		return 0;
	while (!found && (de = readdir(d))) {
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		found = n > 0 && (size_t)n == strlen(want) &&
			memcmp(link, want, (size_t)n) == 0;
	}
	closedir(d);
	return found;
}

/* The process of cgroup dir (or below) with socket:[ino]; 0: none. */
static pid_t tg_cgroup_owner(const char *dir, const char *want, int depth)
{
	char path[4096], pid[32];
	struct dirent *de;
	pid_t found = 0;
	FILE *fp;
	DIR *d;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	fp = fopen(path, "re");
	while (fp && !found && fgets(pid, sizeof(pid), fp)) {
		pid[strcspn(pid, "\n")] = 0;
		if (tg_pid_has(pid, want))
			found = (pid_t)atoi(pid);
	}
	if (fp)
		fclose(fp);
	d = found || depth > 8 ? NULL : opendir(dir);
	while (d && !found && (de = readdir(d))) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		found = tg_cgroup_owner(path, want, depth + 1);
	}
	if (d)
		closedir(d);
	return found;
}

static void tg_heldlog_owner(struct tg_heldlog *h, const char *cgroup,
			     const struct tg_flow *f)
{
	char want[48], path[64];
	unsigned long ino;
	FILE *fp;

	if (h->cookie == f->cookie)
		return;
	h->cookie = f->cookie;
	h->pid = 0;
	snprintf(h->comm, sizeof(h->comm), "?");
	ino = tg_flow_inode(f);
	if (!ino || !cgroup)
		return;
	snprintf(want, sizeof(want), "socket:[%lu]", ino);
	h->pid = tg_cgroup_owner(cgroup, want, 0);
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)h->pid);
	fp = h->pid ? fopen(path, "re") : NULL;
	if (fp && fgets(h->comm, sizeof(h->comm), fp))
		h->comm[strcspn(h->comm, "\n")] = 0;
	if (fp)
		fclose(fp);
}

void tg_heldlog_rcpt(struct tg_heldlog *h, const char *cgroup,
		     const struct tg_flow *f, const char *sender,
		     const char *rcpt, const struct tg_resp *r)
{
	char name[96], mta[48] = "unknown";

	if (!f)
		return;
	tg_flow_name(f, name, sizeof(name));
	tg_heldlog_owner(h, cgroup, f);
	if (h->pid)
		snprintf(mta, sizeof(mta), "%s[%d]", h->comm, (int)h->pid);
	msg_info("%s: to=<%s>, relay=%s, mta=%s, from=<%s>, dsn=%s, "
		 "status=%s (%u %s %s)", name, rcpt, name, mta, sender, r->dsn,
		 r->kind == TG_RK_DEFER_MX ? "deferred" : "held", r->code,
		 r->dsn, r->text);
}

void tg_heldlog_reset(struct tg_heldlog *h)
{
	memset(h, 0, sizeof(*h));
}
