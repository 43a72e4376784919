# tests/e2e/mta.mk - Exim and OpenSMTPD from Debian for the end-to-end
# suite (tests/e2e/mta_run.py), beside Postfix. Included by the top-level
# Makefile.
#
#   make mta-deps   unpack exim4-daemon-light and opensmtpd into
#                   $(MTA_DEPS)/root (their packages conflict with postfix,
#                   so apt cannot install them), install their libraries,
#                   create their system users; see tests/e2e/mta_deps.sh.
#                   `make deps` runs it.
#
# MTA_DEPS does not follow BUILD: one copy serves every build directory.

MTA_DEPS ?= build/deps

.PHONY: mta-deps

deps: mta-deps

mta-deps:
	sh tests/e2e/mta_deps.sh $(MTA_DEPS)
