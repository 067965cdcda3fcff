# The commands CI and the README use; nothing clever.
CARGO ?= cargo
MUSL  := x86_64-unknown-linux-musl

.PHONY: build run test bench lint static

build:
	$(CARGO) build --release

# The tutorial's example: 127.0.0.1:11000 -> 127.0.0.1:6379 (starts a throwaway redis-server if
# none answers there and one is installed). Then, in another terminal: redis-cli -p 11000 PING
run: build
	scripts/run-tutorial.sh target/release/tcp-router

test:
	$(CARGO) test --all-targets

bench: build
	python3 bench/bench.py --router target/release/tcp-router $(BENCH_ARGS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --no-deps --document-private-items --quiet

static:
	rustup target add $(MUSL)
	$(CARGO) build --release --target $(MUSL)
	@ldd target/$(MUSL)/release/tcp-router 2>&1 | grep -q 'not a dynamic executable' \
		|| { echo "target/$(MUSL)/release/tcp-router is not static:"; ldd target/$(MUSL)/release/tcp-router; exit 1; }
	@echo "static binary: target/$(MUSL)/release/tcp-router ($$(du -h target/$(MUSL)/release/tcp-router | cut -f1))"
