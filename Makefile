# The two commands: `make run` starts the whole server, `make test` runs every test.
# Both install what is missing first (Debian packages, Asterisk, the Python environment).

VENV := .venv/bin
SIPP_TARGET ?= 127.0.0.1:$(or $(IVR_SIP_PORT),5060)
NUMBER ?= 120

.PHONY: run test install lint call clean

install:
	@scripts/bootstrap.sh

run: install
	$(VENV)/ivr run

test: install lint
	$(VENV)/pytest

lint: install
	$(VENV)/ruff check ivr callbot tests
	$(VENV)/mypy

# Places one test call (default 120) from SIPp acting as the carrier; NUMBER=121 make call
call:
	sipp -sf tests/sipp/caller.xml -m 1 -s $(NUMBER) -key caller 0299990000 -key rtp_port 40000 \
	  -i 127.0.0.1 -p 5099 -nostdin -trace_screen $(SIPP_TARGET) && echo "call to $(NUMBER): ok"

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
