# The two commands: `make run` (serve on port 8000) and `make test` (the whole suite).
# Both set up everything on a fresh machine: .venv, pinned packages, weights, database.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PORT

.PHONY: run test setup install weights migrate browsers lint bench clean

run: setup
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py bootstrap_local
	@# The Procfile names gunicorn and celery: the ones in .venv, first on PATH.
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/honcho --procfile Procfile start

# The suite builds its own databases (pytest-django's test_<name>, one per integration
# service), so it never migrates the database DATABASE_URL names: whatever state that
# one is in cannot break the tests.
test: install weights browsers
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy
	$(PY) -m pytest

setup: install weights migrate

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-nodeps.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "PMR needs Python 3.11+"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

weights: install
	$(PY) manage.py fetch_weights

migrate: install
	$(PY) manage.py migrate --noinput --verbosity 0

# The browser tests drive Debian's Chromium (Playwright's own download is not used).
browsers:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium chromium-driver >/dev/null; \
	  else \
	    echo "Chromium is missing (apt-get install chromium chromium-driver): browser tests will skip"; \
	  fi; }

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

bench: setup
	$(PY) manage.py benchmark

clean:
	rm -rf $(VENV) var
