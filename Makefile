.PHONY: install demo up test test-cluster test-latest lock lint bench clean

install:            ## virtualenv from the lock (hash-checked), redis-server where missing
	bash scripts/bootstrap.sh

lock:               ## re-resolve requirements-*.txt from pyproject.toml's ranges (uv)
	bash scripts/lock.sh

test-latest:        ## the suite on the newest releases, in a throwaway venv (not CI)
	bash scripts/test-latest.sh

demo:               ## the scripted demo on the embedded stack
	bash scripts/demo.sh

up: install         ## the whole stack in the foreground until Ctrl-C
	.venv/bin/mcp-handshake up

test:               ## lint, type check, tests (what CI runs)
	bash scripts/test.sh

test-cluster:       ## the suites and failure drills on a NATS cluster + Redis Cluster/Sentinel
	bash scripts/test-cluster.sh

lint: install
	.venv/bin/ruff check shared client services tests bench
	.venv/bin/ruff format --check shared client services tests bench
	.venv/bin/mypy

bench: install      ## throughput and latency, side by side with the limits
	.venv/bin/python bench/policy_eval.py
	.venv/bin/python bench/handshake.py
	.venv/bin/python bench/cpu_breakdown.py
	.venv/bin/python bench/step_latency.py
	.venv/bin/python bench/catalog_bind.py

clean:
	rm -rf .handshake .pytest_cache .mypy_cache .ruff_cache
