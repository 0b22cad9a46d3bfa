# Two commands on a fresh machine: `make demo` (install + offline end-to-end run) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# PyTorch's CPU-only wheels: plain PyPI's torch is the multi-GB CUDA build on Linux. Where that host cannot be
# reached (an offline mirror, a wheelhouse in pip's find-links) pip gives up on it after one quick retry and
# takes torch from the wheels it can see; `make install TORCH_INDEX=https://pypi.org/simple` for the CUDA build.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install demo test bench clean triton-env

$(PY):
	$(PYTHON) -m venv $(VENV)
	# torch first, from TORCH_INDEX: the extras below then find it installed and never pull another build.
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --retries 1 --timeout 20 --index-url $(TORCH_INDEX) torch==2.13.0

install: $(PY)
	$(PY) -m pip install -q -e ".[test,demo,onnx,plot]"

demo: install
	$(PY) -m zhcls.demo --out demo_out

# A real Triton server for tests/test_triton_server.py (numpy < 2: an environment of its own).
TRITON_VENV ?= .venv-triton
triton-env:
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q -r tests/triton-requirements.txt
	$(TRITON_VENV)/bin/python -m pip install -q --no-deps -e .

# The layer contract and the linter first: both take seconds, the tests take minutes.
test: install triton-env
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# The README's measured figures, each from a script under benchmarks/ that writes a JSON result into
# bench_out/; small defaults here (minutes). docs/benchmarks.md names the sizes behind each published figure.
bench: install
	$(PY) benchmarks/peers.py --quick --out bench_out
	$(PY) benchmarks/train_from_scratch.py --out bench_out

clean:
	rm -rf $(VENV) $(TRITON_VENV) demo_out bench_out .pytest_cache
