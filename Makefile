# The two commands of the README: `make run` and `make test`. Both work on a fresh Debian
# machine: they create the virtualenv, install what is missing, and start a local PostgreSQL
# in .pgdata/ when DATABASE_URL is unset.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PGDATA ?= .pgdata
# Where `make run` keeps the local admin token it prints.
ADMIN_TOKEN_FILE ?= .local-admin-token
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install postgres browser compiler interop run demo test lint bench bench-compare clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# llama-cpp-python's server for the interop tests (tests/interop): the interop extra of
# setup.cfg. pip builds llama.cpp from source the first time (about 10 minutes on 2 cores;
# its wheel cache makes it instant after that), so only `make test` asks for it. Where it
# cannot be built the interop tests skip saying so; under CI=true the build must succeed.
$(VENV)/.interop: $(VENV)/.installed
	@if $(VENV)/bin/pip install --quiet -e '.[test,interop]'; then touch $@; \
	elif [ "$$CI" = "true" ]; then exit 1; \
	else echo "llama-cpp-python[server] could not be built here: tests/interop will skip"; fi

interop: compiler $(VENV)/.interop

# Debian's PostgreSQL server binaries, when neither they nor DATABASE_URL are there.
postgres:
	@if [ -z "$$DATABASE_URL" ] && ! command -v initdb >/dev/null 2>&1 \
	    && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing PostgreSQL server binaries"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi

# Debian's Chromium and its driver, for the operations page's browser test.
browser:
	@if ! [ -x /usr/bin/chromium ] || ! [ -x /usr/bin/chromedriver ]; then \
	  echo "installing chromium and chromium-driver"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

# Debian's C/C++ compiler and CMake, which building llama-cpp-python needs.
compiler:
	@if ! command -v g++ >/dev/null 2>&1 || ! command -v cmake >/dev/null 2>&1; then \
	  echo "installing g++ and cmake"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ cmake >/dev/null; \
	fi

# The service and a worker, as the Procfile runs them in production. Ctrl-C stops them; honcho
# then exits 130, which is how they are meant to stop, so the recipe ends with 0 and make stays
# quiet (the trap also keeps this shell alive until honcho has stopped them).
run: install postgres
	@trap 'exit 0' INT; \
	  url="$${DATABASE_URL:-$$($(PY) -m ai_service.localpg start $(PGDATA))}" && \
	  echo "DATABASE_URL=$$url" && \
	  DATABASE_URL="$$url" $(VENV)/bin/ai-service migrate && \
	  token=$$(DATABASE_URL="$$url" $(VENV)/bin/ai-service tokens ensure --name local-admin \
	    --role admin --file $(ADMIN_TOKEN_FILE)) && \
	  echo "admin token (kept in $(ADMIN_TOKEN_FILE)): $$token" && \
	  echo "try:  curl -s -H 'Authorization: Bearer $$token' http://127.0.0.1:$${HTTP_PORT:-8080}/api/v1/stats" && \
	  DATABASE_URL="$$url" MIGRATE_ON_START=false PATH="$(CURDIR)/$(VENV)/bin:$$PATH" \
	    $(VENV)/bin/honcho start

# `make run` with the test LLM server (tests/support/fake_llm.py, answering "echo: ...") on a
# free port of 127.0.0.1, for trying the service on a machine without a model. The service
# starts only once that server listens, so it never talks to something else.
demo: install
	@log=$$(mktemp); \
	  $(PY) -m tests.support.fake_llm --port 0 --latency-ms 200 >"$$log" 2>&1 & pid=$$!; \
	  trap 'kill $$pid 2>/dev/null; rm -f "$$log"' EXIT; trap 'exit 0' INT; trap 'exit 143' TERM; \
	  until grep -q "listening on" "$$log"; do \
	    if ! kill -0 $$pid 2>/dev/null; then \
	      echo "the test LLM server did not start: $$(tail -n 1 "$$log")" >&2; exit 1; \
	    fi; sleep 0.1; \
	  done; \
	  url=$$(sed -n 's/^fake-llm listening on //p' "$$log"); \
	  echo "test LLM server (answers \"echo: <your text>\") at $$url"; \
	  LLM_BASE_URL=$$url $(MAKE) --no-print-directory run

lint: install
	$(VENV)/bin/ruff check .

test: install interop postgres browser lint
	$(PY) -m pytest

# The benchmark adds the queues it compares against: the bench extra of setup.cfg.
bench: install postgres
	$(VENV)/bin/pip install --quiet -e '.[test,bench]'
	$(PY) -m bench

# This checkout against another revision, alternated in one run: `make bench-compare BASE=main~3`
# (ONLY= narrows it to some benchmarks, as `python -m bench --only` does).
BASE ?= HEAD~1
bench-compare: install postgres
	$(VENV)/bin/pip install --quiet -e '.[test,bench]'
	$(PY) -m bench.compare $(BASE) $(if $(ONLY),--only $(ONLY))

clean:
	-$(PY) -m ai_service.localpg stop $(PGDATA)
	rm -rf $(VENV) $(PGDATA) *.egg-info
