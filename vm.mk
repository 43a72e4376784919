# ---- vmtest (issue 8) -------------------------------------------------------
# Runs the tests under another kernel: tools/vmtest boots it in QEMU with this
# machine's root file system shared read-only (9p) under a tmpfs overlay, and
# runs one command inside as root. See README.md, "Kernels".
#
#   make vm-deps       QEMU, busybox-static, kmod; Debian 12's kernel (6.1)
#                      unpacked (not installed) in build/vm
#   make vmtest        on that kernel: the unit tests and VM_SUITES
#   make vmtest-smoke  on that kernel: tlsguardd loads, and tests/e2e/run.py
#
#   VM_KERNEL=PATH     another bzImage (modules: see tools/vmtest)
#   VM_ARGS=...        more tools/vmtest options (--memory, --cpus, --timeout)
#
# Nothing is built in the VM: the host builds, the VM runs what was built.
# Each suite in the VM binds its usual loopback addresses and pins, but in the
# VM's own kernel: no lock against the host's suites is needed.

VM_KERNEL ?= debian-6.1
VM_ARGS   ?=
VM_PKGS   := qemu-system-x86 busybox-static kmod
VMTEST    := $(PYTHON) tools/vmtest --kernel $(VM_KERNEL) $(VM_ARGS)
VM_TOOLS  := --tlsguardd $(BUILD)/tlsguardd --tlsguardctl $(BUILD)/tlsguardctl

# name=command pairs for tests/vm/suites.py (one VM boot runs them all)
VM_UNIT   := unit='rc=0; for t in $(UNIT_TESTS); do $$t || rc=1; done; exit $$rc'
VM_SUITES ?= \
	$(VM_UNIT) \
	cli_test='$(PYTHON) tests/e2e/cli_test.py $(VM_TOOLS)' \
	run='$(PYTHON) tests/e2e/run.py $(VM_TOOLS)' \
	tls_run='$(PYTHON) tests/e2e/tls_run.py $(VM_TOOLS)' \
	mx_run='$(PYTHON) tests/e2e/mx_run.py $(VM_TOOLS)' \
	smtps_run='$(PYTHON) tests/e2e/smtps_run.py $(VM_TOOLS)' \
	audit_run='$(PYTHON) tests/e2e/audit_run.py $(VM_TOOLS)' \
	framing_run='$(PYTHON) tests/e2e/framing_run.py $(VM_TOOLS)' \
	pin_run='$(PYTHON) tests/e2e/pin_run.py $(VM_TOOLS)' \
	admin_run='$(PYTHON) tests/e2e/admin_run.py $(VM_TOOLS)' \
	fault_run='$(PYTHON) tests/e2e/fault_run.py $(VM_TOOLS)' \
	concurrency_run='$(PYTHON) tests/e2e/concurrency_run.py $(VM_TOOLS)' \
	probe_run='$(PYTHON) tests/e2e/probe_run.py $(VM_TOOLS)' \
	mta_run='$(PYTHON) tests/e2e/mta_run.py $(VM_TOOLS) --deps $(MTA_DEPS)/root'
VM_SMOKE  := run='$(PYTHON) tests/e2e/run.py $(VM_TOOLS)'

.PHONY: vm-deps vmtest vmtest-smoke

vm-deps:
	@if ! dpkg -s $(VM_PKGS) >/dev/null 2>&1; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $(VM_PKGS); \
	fi
	$(VMTEST) --fetch

vmtest: vm-deps mta-deps all $(UNIT_TESTS)
	$(VMTEST) --timeout 7200 -- $(PYTHON) tests/vm/suites.py $(VM_SUITES)

vmtest-smoke: vm-deps all
	$(VMTEST) --timeout 1800 -- $(PYTHON) tests/vm/suites.py $(VM_SMOKE)
# ---- end of vmtest ------------------------------------------------------------
