# Two commands for a newcomer: `make demo` and `make test`. Each sets itself up in a virtualenv
# named after the interpreter (.venv-py3.11 for Python 3.11): enter it with
# `. .venv-py3.11/bin/activate`. PYTHON may be a name on PATH or a path to an interpreter.
PYTHON ?= python3
PYTHON_OK := $(shell command -v $(PYTHON) >/dev/null 2>&1 && $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo yes)
ifneq ($(PYTHON_OK),yes)
$(error PYTHON=$(PYTHON) is not a Python 3.11+ interpreter on this machine. Give a path, e.g. make test PYTHON=$$(pyenv root)/versions/3.12.1/bin/python3.12)
endif
VENV ?= .venv-$(notdir $(shell $(PYTHON) -c 'import sys; print(f"py{sys.version_info[0]}.{sys.version_info[1]}")'))
BIN := $(VENV)/bin
# The demo's own sandbox, on its own ports: it never touches a sandbox you started.
DEMO_DIR ?= $(CURDIR)/.demo-sandbox
DEMO_API_PORT ?= 8741
DEMO_REDIS_PORT ?= 6401
PIKA_API_URL ?= http://127.0.0.1:$(DEMO_API_PORT)

.PHONY: demo test lint venv clean

$(BIN)/chaos: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/chaos

demo: $(BIN)/chaos
	rm -f journal.json junit.xml
	$(BIN)/chaospika sandbox down --dir $(DEMO_DIR) >/dev/null
	$(BIN)/chaospika sandbox up --reset --dir $(DEMO_DIR) \
	  --api-port $(DEMO_API_PORT) --redis-port $(DEMO_REDIS_PORT)
	PIKA_API_URL=$(PIKA_API_URL) PIKA_REDIS_URL=redis://127.0.0.1:$(DEMO_REDIS_PORT)/0 \
	  PIKA_WORKER_PIDFILE=$(DEMO_DIR)/worker.pid PIKA_DB_URL=sqlite:///$(DEMO_DIR)/orders.db \
	  $(BIN)/chaos --log-file chaostoolkit.log --no-version-check run --journal-path journal.json \
	  experiments/worker-crash.json || true
	$(BIN)/python -m chaospika.report journal.json || true
	$(BIN)/chaospika sandbox down --dir $(DEMO_DIR)
	$(BIN)/chaospika verdict journal.json --junit junit.xml

test: $(BIN)/chaos
	$(BIN)/ruff check chaospika tests bench
	$(BIN)/ruff format --check chaospika tests bench
	$(BIN)/python -m pytest -m "not bench"

clean:
	rm -rf .venv-py* .demo-sandbox chaostoolkit.log journal.json junit.xml
