# Benchmark recipes are silent (@) so that stdout is their JSON alone, also through make.
# The two commands of the README: `make demo` (main job: the rehearsal server with a team of bots) and `make test`.
# Each one creates .venv in the checkout and installs what it needs, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# numba's cache does not notice when a kernel calls a changed kernel in another file, so the cache
# folder is keyed on the sources of the kernels: any change to physics/ or netcode/ compiles afresh.
# The rule is rehearsal/numba_cache.py's, which direct commands (`rehearsal serve`) apply too: one cache.
export NUMBA_CACHE_DIR := $(shell $(PYTHON) rehearsal/numba_cache.py)

.PHONY: demo physics-demo test lint bench bench-suture bench-thread bench-net bench-snapshot bench-response bench-web bench-decode bench-haptics bench-participant clean \
	load-capacity load-impaired load-soak load-faults load-crash load-attack load-fleet

$(STAMP): pyproject.toml  # set-up talks on stderr: a first `make bench` still prints only JSON on stdout
	@echo "installing into $(VENV) (first use)" >&2
	@$(PYTHON) -m venv $(VENV) >&2
	@$(PY) -m pip install --quiet --upgrade pip >&2
	@$(PY) -m pip install --quiet -e '.[test]' >&2
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m rehearsal demo $(ARGS)

physics-demo: $(STAMP)
	$(PY) -m physics.demo $(ARGS)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(STAMP)
	@$(PY) -m physics.bench $(ARGS)

bench-suture: $(STAMP)  # what a needle and a 200-segment thread add per frame to the 20k scene: physics/suture_bench.py
	@$(PY) -m physics.suture_bench $(ARGS)

bench-net: $(STAMP)
	@$(PY) -m netcode.transport.bench $(ARGS)

# Traces recorded from the real engine (physics/trace_recorder.py, rehearsal/suture_trace.py), cached per source of
# the physics and of the recorders (not in git)
TRACE_DIR := .numba_cache/traces/$(shell find physics rehearsal/suture_trace.py -name '*.py' | sort | xargs cat | cksum | cut -d' ' -f1)
$(TRACE_DIR)/%.npz: | $(STAMP)
	@$(PY) -m physics.trace_recorder --scene $* --out $@ --quiet >&2
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	@$(PY) -m pip install --quiet -e '.[test,bench]' >&2
	@touch $(BENCH_STAMP)

bench-snapshot: $(BENCH_STAMP) $(TRACE_DIR)/liver.npz $(TRACE_DIR)/block.npz
	@$(PY) -m netcode.sync.snapshot_bench --trace $(TRACE_DIR)/liver.npz --trace $(TRACE_DIR)/block.npz $(ARGS)

# The suture thread's sync bytes per frame (netcode/sync/thread_bench.py) on a thread recorded from the physics
$(TRACE_DIR)/suture.npz: | $(STAMP)
	@$(PY) -m rehearsal.suture_trace --out $@ >&2
bench-thread: $(STAMP) $(TRACE_DIR)/suture.npz
	@$(PY) -m netcode.sync.thread_bench --trace $(TRACE_DIR)/suture.npz $(ARGS)

bench-response: $(STAMP)
	@$(PY) -m rehearsal.response_bench $(ARGS)

# What browser observers cost the room (tick p99 with and without them, their Mbit/s): rehearsal/web/bench.py
bench-web: $(STAMP)
	@$(PY) -m rehearsal.web.bench $(ARGS)

# The JavaScript snapshot decoder's time per snapshot in headless Chromium, beside Python's: rehearsal/web/decode_bench.py
bench-decode: $(STAMP)
	@$(PY) -m rehearsal.web.decode_bench $(ARGS)

# The browser participant (headless Chromium as an assistant) through a loopback TCP relay with 100 ms RTT and 2%
# segment loss: held-tissue prediction error with and without prediction, own-instrument latency, snapshot gaps
bench-participant: $(STAMP)
	@$(PY) -m rehearsal.web.participant_bench $(ARGS)

# The thin client's haptic loop: real-time rate and jitter, force error and energy at 100 ms RTT (haptics_bench.py)
bench-haptics: $(STAMP)
	@$(PY) -m netcode.thin_client.haptics_bench $(ARGS)

# Load and fault runs (loadtests/README.md): the server in a subprocess and swarms of headsets on loopback.
LOAD_STAMP := $(VENV)/.installed-load
$(LOAD_STAMP): $(STAMP)  # set-up on stderr: stdout is the run's JSON report alone
	@$(PY) -m pip install --quiet -e '.[test,load]' >&2
	@touch $(LOAD_STAMP)

load-capacity load-impaired load-soak load-faults load-crash load-attack load-fleet: $(LOAD_STAMP)
	@$(PY) -m loadtests $(@:load-%=%) $(ARGS)

clean:
	rm -rf $(VENV) .numba_cache .pytest_cache
