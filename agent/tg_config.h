/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_config - tlsguardd's settings: tlsguard.conf and the command line
 * SYNOPSIS
 *	#include "tg_config.h"
 *
 *	void	tg_config_defaults(struct tg_opts *o);
 *	int	tg_config_read(struct tg_opts *o, const char *path,
 *			       char *err, size_t errlen);
 *	int	tg_config_set(struct tg_opts *o, const char *name,
 *			      const char *value, char *err, size_t errlen);
 *	int	tg_config_finish(struct tg_opts *o, char *err, size_t errlen);
 *	size_t	tg_config_print(const struct tg_opts *o, int changed_only,
 *				char *out, size_t len);
 * DESCRIPTION
 *	The configuration file has the grammar of Postfix's main.cf: one
 *	"name = value" a logical line; a line that starts with white space
 *	continues the one before; a line whose first non-blank character is
 *	'#' is a comment, as is a blank line. White space around the name
 *	and the value is dropped. A later setting of a name replaces an
 *	earlier one. List values (ports, exempt) are separated by commas
 *	and/or white space. tlsguard.conf(5) names every setting.
 *
 *	tg_config_defaults() fills o with the built-in defaults.
 *
 *	tg_config_read() applies the settings of the file at path. An
 *	unknown name, a line that is not "name = value" or a bad value ends
 *	it with -1 and "FILE:LINE: ..." in err.
 *
 *	tg_config_set() applies one setting by name, as a file line or a
 *	command-line flag does; -1 with the reason in err when the value is
 *	bad, -2 when the name is unknown (the caller names the place).
 *	"pin", once the switch for what is now always done (tlsguard stays
 *	in the kernel when tlsguardd is not running), is no setting any
 *	more: "yes" is accepted and leaves why it is ignored in o->pin_note
 *	(the caller puts the place before it and warns); anything else is
 *	refused, since it could only mean "stop enforcing on exit".
 *
 *	tg_config_finish() fills in derived values (the default port 25
 *	when no port is set at all), then checks what no single setting
 *	can (the required ones are set): a caller that needs no cgroup nor
 *	senders (tlsguardd --check-verifier) has the derived values even
 *	when it returns -1.
 *
 *	tg_config_print() writes every setting as "name = value", in the
 *	order of tlsguard.conf(5), or only those that differ from the
 *	default (like "postconf -n"); it returns the length written.
 */
#ifndef TG_CONFIG_H
#define TG_CONFIG_H

#include <stddef.h>
#include <linux/types.h>

#include "tlsguard.h"
#include "tg_ctl.h"
#include "tg_resp.h"

#define TG_CONFIG_DEFAULT	"/etc/tlsguard/tlsguard.conf"
#define TG_EXEMPT_MAX		1024
#define TG_SETTING_MAX		1024	/* bytes of one value */
#define TG_PIN_NOTE	"always on; the setting is ignored (remove it; see " \
			"tlsguard.conf(5))"


struct tg_opts {
	char config[TG_SETTING_MAX];	/* the file read, "" for none */
	char cgroup[TG_SETTING_MAX];
	char senders[TG_SETTING_MAX];
	char socket[TG_SETTING_MAX];
	char resolver[TG_SETTING_MAX];	/* mx_check: "" for the system's */
	int mx_check;
	char audit[TG_SETTING_MAX];	/* "" for none */
	char tls_copies[TG_SETTING_MAX];	/* "" for none */
	char metrics[TG_SETTING_MAX];	/* "" for none */
	int metrics_remote;		/* metrics may be on any address */
	unsigned metrics_line;		/* of metrics_address in config */
	char pin_note[256];		/* "pin" was given: why it is ignored */
	char pin_dir[TG_PIN_DIR_MAX + 1];	/* on a bpf filesystem */
	__u16 ports[TG_PORTS_MAX];	/* SMTP (STARTTLS) ports */
	unsigned nports;
	__u16 tls_ports[TG_PORTS_MAX];	/* implicit TLS ports */
	unsigned ntls_ports;
	unsigned slots;
	unsigned max_flows;		/* sizes of kernel maps */
	unsigned max_senders;
	unsigned ringbuf;
	int verbose;
	int syslog;
	int syslog_facility;		/* LOG_MAIL, ... */
	char syslog_name[64];
	char syslog_socket[TG_SETTING_MAX];
	char exempt_text[TG_SETTING_MAX];	/* as given, for printing */
	__u64 exempt[TG_EXEMPT_MAX];
	size_t nexempt;
	struct tg_replies replies;	     /* reject_code ... weak_tls_text */
	char postfix_config[TG_SETTING_MAX]; /* "" for none */
	char unguarded_routes[16];	     /* "warn" or "refuse" */
	char delimiters[64]; /* "postfix", "none" or the bytes */
};

void tg_config_defaults(struct tg_opts *o);
int tg_config_read(struct tg_opts *o, const char *path, char *err,
		   size_t errlen);
int tg_config_set(struct tg_opts *o, const char *name, const char *value,
		  char *err, size_t errlen);
int tg_config_finish(struct tg_opts *o, char *err, size_t errlen);
size_t tg_config_print(const struct tg_opts *o, int changed_only, char *out,
		       size_t len);

#endif /* TG_CONFIG_H */
