# The commands CI and the README use; nothing clever.
CARGO ?= cargo
MUSL  := x86_64-unknown-linux-musl

.PHONY: build run test bench scale soak lint static install deb check-packaging publish-check fuzz-ci

build:
	$(CARGO) build --release

# The tutorial's example: 127.0.0.1:11000 -> 127.0.0.1:6379 (starts a throwaway redis-server if
# none answers there, installing it first as root with apt-get). Then: redis-cli -p 11000 PING
run: build
	scripts/run-tutorial.sh target/release/tcp-router

# Unit and integration tests, the doctests of every public item, and the examples: built, and the
# embedding one run against its own echo upstream on loopback (it must drain without cutting).
SKIPPED_TESTS := $(or $(CARGO_TARGET_DIR),target)/skipped-tests.txt

test:
	@rm -f $(SKIPPED_TESTS)
	@status=0; $(CARGO) test --all-targets || status=$$?; \
	if [ -s $(SKIPPED_TESTS) ]; then \
		echo "Tests skipped for lack of a real peer (they passed without running):"; \
		sort $(SKIPPED_TESTS); \
	fi; \
	exit $$status
	$(CARGO) test --doc
	$(CARGO) build --release
	TCP_ROUTER_MEMORY_BIN=target/release/tcp-router $(CARGO) test --test integration memory::an_idle_connection_costs
	@if $(MAKE) --no-print-directory static; then \
		TCP_ROUTER_MEMORY_STATIC_BIN=target/$(MUSL)/release/tcp-router $(CARGO) test --test integration memory::an_idle_connection_of_the_static_build -- --ignored; \
	else echo "make test: no static build (the musl target cannot be added); its memory bound is not checked" >&2; fi
	$(CARGO) build --examples
	@out=$$($(CARGO) run --quiet --example embed) && echo "$$out" && echo "$$out" | grep -q ', 0 cut$$'

# Side by side with direct loopback, the shape's floor (bench/floor/relay.c, compiled by bench.py
# with $CC, default cc, -O2 -pthread; BENCH_ARGS=--skip-floor without one) and Debian's forwarders.
bench: build
	python3 bench/bench.py --router target/release/tcp-router $(BENCH_ARGS)

# 8,000 concurrent connections held through tcp-router, all echoing correctly.
scale: build
	python3 bench/scale.py --router target/release/tcp-router --connections $(or $(CONNECTIONS),8000)

# A mixed workload through one tcp-router for DURATION seconds (default 600): every byte, every
# connection's end, the log lines and the metrics checked; resources back to the idle baseline at
# the end. Exits non-zero on any unexpected outcome. See soak/README.md.
soak: build
	python3 soak/soak.py --router target/release/tcp-router --duration $(or $(DURATION),600) $(SOAK_ARGS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --no-deps --document-private-items --quiet

static:
	rustup target add $(MUSL)
	# Non-PIE: a static-pie binary still has a dynamic section, and ldd then says "statically linked".
	RUSTFLAGS="-C relocation-model=static" $(CARGO) build --release --target $(MUSL)
	@ldd target/$(MUSL)/release/tcp-router 2>&1 | grep -q 'not a dynamic executable' \
		|| { echo "target/$(MUSL)/release/tcp-router is not static:"; ldd target/$(MUSL)/release/tcp-router; exit 1; }
	@echo "static binary: target/$(MUSL)/release/tcp-router ($$(du -h target/$(MUSL)/release/tcp-router | cut -f1))"

# Installs the release binary to $(DESTDIR)$(PREFIX)/bin, the manual pages (gzipped) to
# share/man/man8 and man5, the systemd units to $(UNITDIR) with ExecStart= pointing at that
# binary, and /etc/tcp-router/tcp-router.conf (every directive commented out) unless it exists.
# `make install PREFIX=/usr DESTDIR=/tmp/stage` stages a tree; see scripts/install.sh.
PREFIX  ?= /usr/local
UNITDIR ?= $(PREFIX)/lib/systemd/system

install: build
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" UNITDIR="$(UNITDIR)" scripts/install.sh target/release/tcp-router

# target/debian/tcp-router_VERSION_ARCH.deb, of the static binary; if the musl target cannot be
# had, of the release binary (then with the Depends dpkg-shlibdeps finds), saying so.
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
DEB     := target/debian/tcp-router_$(VERSION)_$(shell dpkg --print-architecture 2>/dev/null).deb

deb:
	@if $(MAKE) --no-print-directory static; then bin=target/$(MUSL)/release/tcp-router; \
	else echo "make deb: no static binary; packaging target/release/tcp-router instead" >&2; \
		$(CARGO) build --release || exit 1; bin=target/release/tcp-router; fi; \
	scripts/build-deb.sh $$bin

# The packaging checks CI runs: manual page markup; the units verified against a staged install
# (a copy whose ExecStart= names the staged binary, and MANPATH for Documentation=, so no booted
# systemd nor an installed binary is needed); their exposure score; the .deb's metadata and
# contents, and lintian where installed. As root, and only where no tcp-router package is
# installed already: install the .deb, run it, find its manual page, remove and purge it.
PKG_CHECK := $(CURDIR)/target/check-packaging
UNITS     := tcp-router.service tcp-router.socket tcp-router@.service

check-packaging: deb
	mandoc -Tlint -W warning man/tcp-router.8 man/tcp-router.conf.5
	rm -rf $(PKG_CHECK) && mkdir -p $(PKG_CHECK)/units
	$(MAKE) --no-print-directory install DESTDIR=$(PKG_CHECK)/root PREFIX=/usr >/dev/null
	for unit in $(UNITS); do \
		sed 's|/usr/bin/tcp-router|$(PKG_CHECK)/root/usr/bin/tcp-router|' \
			$(PKG_CHECK)/root/usr/lib/systemd/system/$$unit >$(PKG_CHECK)/units/$$unit || exit 1; \
	done
	MANPATH=$(PKG_CHECK)/root/usr/share/man systemd-analyze verify \
		$(PKG_CHECK)/units/tcp-router.service $(PKG_CHECK)/units/tcp-router.socket \
		$(PKG_CHECK)/units/tcp-router@check.service
	for unit in tcp-router.service tcp-router@.service; do \
		out=$$(systemd-analyze security --offline=yes --threshold=15 deploy/systemd/$$unit) \
			|| { echo "$$out"; echo "$$unit: exposure above 1.5"; exit 1; }; \
		echo "$$out" | tail -n 1; \
	done
	dpkg-deb --info $(DEB)
	dpkg-deb --contents $(DEB)
	@if command -v lintian >/dev/null; then \
		echo "lintian --fail-on error $(DEB)"; \
		lintian --fail-on error $(DEB); \
	else echo "check-packaging: lintian not installed; skipped (apt-get install lintian)"; fi
	@if [ "$$(id -u)" != 0 ]; then echo "check-packaging: not root; dpkg -i/-r skipped"; \
	elif dpkg-query -W tcp-router >/dev/null 2>&1; then \
		echo "check-packaging: a tcp-router package is installed; dpkg -i/-r skipped"; \
	else set -x; \
		dpkg -i $(DEB) && tcp-router --version && man -w tcp-router \
			&& dpkg -r tcp-router && ! test -e /usr/bin/tcp-router \
			&& dpkg --purge tcp-router && ! test -e /etc/tcp-router; \
	fi
	$(MAKE) --no-print-directory publish-check

# The crate as crates.io would take it: `cargo publish --dry-run` packages what Cargo.toml's
# `include` lists, builds it from the package and uploads nothing (it reads the registry's index).
# Its one expected warning is that the `integration` test target is left out: the tests stay in
# the repository (they read docs/, man/ and deploy/), the package carries what a user needs.
# Any other warning fails. --allow-dirty: the checks before may leave files a clone lacks.
publish-check:
	@out=$$($(CARGO) publish --dry-run --allow-dirty 2>&1) || { echo "$$out"; exit 1; }; \
	unexpected=$$(echo "$$out" | grep '^warning' \
		| grep -v -e 'ignoring test `integration`' -e 'aborting upload due to dry run'); \
	if [ -n "$$unexpected" ]; then echo "$$out"; echo "cargo publish --dry-run warned:"; \
		echo "$$unexpected"; exit 1; fi; \
	echo "cargo publish --dry-run: clean; $$(echo "$$out" | grep -o 'Packaged .*')"

# Every fuzz target (fuzz/README.md) for FUZZ_SECONDS each, starting from its corpus in
# fuzz/corpus/TARGET (where what it finds is added), all built first so the time is fuzzing;
# installs cargo-fuzz if missing. No sanitizer: the crate has no unsafe code, and the ASan build
# is slower to build and to run. A crash (a panic or a failed assertion) fails the run once all
# targets have run; its input is in fuzz/artifacts/TARGET/, the log in FUZZ_LOGS/TARGET.log.
FUZZ_TARGETS := sni http_host first_bytes proxy_protocol config_file route_keys durations addresses health_checks handoff_wire argv
FUZZ_SECONDS ?= 30
FUZZ_FLAGS   := --sanitizer none
FUZZ_LOGS    := fuzz/target/fuzz-ci

fuzz-ci:
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz build $(FUZZ_FLAGS)
	@mkdir -p $(FUZZ_LOGS); failed=; \
	for t in $(FUZZ_TARGETS); do \
		dict=; if [ -f fuzz/dicts/$$t.dict ]; then dict=-dict=fuzz/dicts/$$t.dict; fi; \
		if RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $(FUZZ_FLAGS) $$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 $$dict \
			>$(FUZZ_LOGS)/$$t.log 2>&1; then \
			echo "fuzz $$t: ok, $$(sed -n 's/^stat::number_of_executed_units: *//p' $(FUZZ_LOGS)/$$t.log) runs in $(FUZZ_SECONDS) s, corpus $$(ls fuzz/corpus/$$t | wc -l) files"; \
		else \
			echo "fuzz $$t: FAILED (log: $(FUZZ_LOGS)/$$t.log)"; sed -n '/panicked at\|ERROR: libFuzzer/,/^stack backtrace:/p' $(FUZZ_LOGS)/$$t.log | head -n 12; \
			sed -n '/^Failing input:/,/^Minimize/p' $(FUZZ_LOGS)/$$t.log; \
			failed="$$failed $$t"; \
		fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz targets that crashed:$$failed (inputs in fuzz/artifacts/)"; exit 1; fi
