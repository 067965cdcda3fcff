# The commands CI and the README use; nothing clever.
CARGO ?= cargo
MUSL  := x86_64-unknown-linux-musl

.PHONY: build run test bench scale lint static

build:
	$(CARGO) build --release

# The tutorial's example: 127.0.0.1:11000 -> 127.0.0.1:6379 (starts a throwaway redis-server if
# none answers there and one is installed). Then, in another terminal: redis-cli -p 11000 PING
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
	$(CARGO) build --examples
	$(CARGO) run --quiet --example embed | tee /dev/stderr | grep -q ', 0 cut$$'

bench: build
	python3 bench/bench.py --router target/release/tcp-router $(BENCH_ARGS)

# 8,000 concurrent connections held through tcp-router, all echoing correctly.
scale: build
	python3 bench/scale.py --router target/release/tcp-router --connections $(or $(CONNECTIONS),8000)

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
