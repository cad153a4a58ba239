# Two commands for a newcomer: `make demo` and `make test`. Each sets itself up in a virtualenv.
PYTHON ?= python3
VENV ?= .venv-$(notdir $(shell $(PYTHON) -c 'import sys; print(f"py{sys.version_info[0]}.{sys.version_info[1]}")'))
BIN := $(VENV)/bin
SANDBOX_DIR ?= $(HOME)/.chaospika/sandbox

.PHONY: demo test lint venv clean

$(BIN)/chaos: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/chaos

demo: $(BIN)/chaos
	$(BIN)/chaospika sandbox down --dir $(SANDBOX_DIR) >/dev/null
	rm -rf $(SANDBOX_DIR)
	$(BIN)/chaospika sandbox up --dir $(SANDBOX_DIR)
	status=0; \
	PIKA_WORKER_PIDFILE=$(SANDBOX_DIR)/worker.pid PIKA_DB_URL=sqlite:///$(SANDBOX_DIR)/orders.db \
	  $(BIN)/chaos --log-file chaostoolkit.log run --journal-path journal.json \
	  experiments/worker-crash.json || status=$$?; \
	$(BIN)/python -m chaospika.report journal.json; \
	$(BIN)/chaospika sandbox down --dir $(SANDBOX_DIR); \
	exit $$status

test: $(BIN)/chaos
	$(BIN)/ruff check chaospika tests bench
	$(BIN)/ruff format --check chaospika tests bench
	$(BIN)/python -m pytest -m "not bench"

clean:
	rm -rf .venv-py* chaostoolkit.log journal.json
