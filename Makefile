# The two commands: `make run` starts the whole server, `make test` runs every test.
# Both install what is missing first (Debian packages, Asterisk, the Python environment).

VENV := .venv/bin
SIPP_TARGET ?= 127.0.0.1:$(or $(IVR_SIP_PORT),5060)
NUMBER ?= 120
KEY ?= 4

.PHONY: run cluster test install lint call publish bench bench-quick bench-cluster clean

install:
	@scripts/bootstrap.sh

run: install
	$(VENV)/ivr run

# Several Asterisk nodes behind Kamailio on this machine, with shared Redis and SQL (README).
cluster: install
	$(VENV)/ivr cluster

test: install lint
	$(VENV)/pytest

lint: install
	$(VENV)/ruff check ivr callbot tests bench
	$(VENV)/mypy

# One test call from SIPp acting as the carrier: dials NUMBER (120), presses KEY (4) after 3 s
# by SIP INFO, and stays until the server hangs up. `make call NUMBER=121 KEY=1`
call:
	sipp -sf tests/sipp/press_key.xml -m 1 -s $(NUMBER) -key caller 0299990000 -key key $(KEY) \
	  -key rtp_port 40000 -i 127.0.0.1 -p 5099 -nostdin $(SIPP_TARGET) >/dev/null \
	  && echo "call to $(NUMBER), key $(KEY): ok (see the record: GET /api/calls)"

# After editing dialplans/ or audio_prompts/: check, render and make it live, no restart.
publish: install
	$(VENV)/ivr dialplan publish

# How many calls, how fast, against plain Asterisk with app_queue on this machine (bench/README.md):
# about 20 minutes; `make bench-quick` takes a minute or two. Figures in bench/results.json.
bench: install
	$(VENV)/python -m bench

bench-quick: install
	$(VENV)/python -m bench --quick

# The cluster (edge + two nodes) against one node, and its faults under load (bench/README.md):
# under 20 minutes; `.venv/bin/python -m bench.cluster --quick` takes a few. Figures in
# bench/cluster-results.json.
bench-cluster: install
	$(VENV)/python -m bench.cluster

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
