# dqd — one entry point for setup, demo, tests and benchmarks.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PROTO_OUT := dqd_server/_proto/detection_pb2.py clients/python/dqd_client/_proto/detection_pb2.py

.PHONY: install proto demo test test-slow test-gpu gpu-check serve bench bench-models soak clean

install: $(STAMP) $(PROTO_OUT)

$(STAMP): requirements-dev.txt setup.py clients/python/setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU wheel; anything else pulls a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) scripts/gen_protos.py
	$(PY) -m pip install -q --no-build-isolation -e . -e 'clients/python[cli]'
	touch $(STAMP)

# Generated gRPC code: rebuilt whenever a .proto changes; never edited by hand.
$(PROTO_OUT): $(wildcard protos/dqd/v1/*.proto) scripts/gen_protos.py | $(STAMP)
	$(PY) scripts/gen_protos.py

proto:
	$(PY) scripts/gen_protos.py

demo: install
	$(PY) -m dqd_server demo

serve: install
	$(PY) -m dqd_server serve

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

test-gpu: install
	$(PY) -m pytest -q -m gpu

# Throughput (engine, end to end with 1 and N workers, transport ceilings) -> bench/results/throughput.json
bench: install
	$(PY) bench/throughput.py

# ml/llm: raw ONNX Runtime vs dqd's serving path vs the service, catalog rows/s -> bench/results/models.json
# (trains bench/results/models-repo first if it is missing: about 3-4 minutes on 2 cores)
bench-models: install
	test -d bench/results/models-repo || $(VENV)/bin/dqd train --catalog 50000 --out bench/results/models-repo
	$(PY) bench/models.py --repo bench/results/models-repo

# On a CUDA machine: backend parity + ml/llm throughput per backend, one table (scripts/gpu_check.sh)
gpu-check: install
	scripts/gpu_check.sh --quick

# 16 concurrent streams for 60 s on loopback -> bench/results/soak.json
soak: install
	$(PY) bench/soak.py

clean:
	rm -rf $(VENV) dqd_server/_proto clients/python/dqd_client/_proto build *.egg-info clients/python/*.egg-info
