# BTL Runtime. Two commands do everything on a fresh machine:
#   make run    build ./caddy and serve the gateway on http://localhost:8080 (Caddyfile.example)
#   make test   vet, staticcheck, race tests (PostgreSQL included), a short fuzz pass
GO        ?= go
STATICCHECK_VERSION ?= v0.8.2
FUZZTIME  ?= 30000x
# The load generator gets CPU 0, the servers CPU 1 (when taskset exists).
PIN_LOADGEN := $(shell command -v taskset >/dev/null 2>&1 && echo "taskset -c 0")

.PHONY: build run test jsclients hostile vet lint fuzz bench bench-go bench-savings chaos xcaddy clean

build:
	$(GO) build -o caddy ./cmd/caddy

run: build
	@./scripts/run.sh

vet:
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi

lint: vet
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

test: lint jsclients
	$(GO) test -race -count=1 ./...
	$(MAKE) --no-print-directory fuzz

# The official JavaScript SDKs that TestJSClients drives (pinned by package-lock.json). Without
# npm or the registry the test skips instead of failing the run.
JSCLIENTS := caddymodule/testdata/jsclients
jsclients:
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(JSCLIENTS) --prefer-offline --no-audit --no-fund --silent || echo "jsclients: npm ci failed; TestJSClients will skip"; \
	else echo "jsclients: npm not found; TestJSClients will skip"; fi

# The hostile-tenant suite alone (make test runs it too).
hostile:
	$(GO) test -race -count=1 -run '^TestHostile' ./...

# A brief pass of every fuzz target (each parser that reads untrusted bytes), as a count of
# executions: a time limit can end a slow worker mid-run ("context deadline exceeded") on a
# loaded machine and fail CI for nothing (go.dev/issue/75804, fixed in Go 1.27). Longer runs:
# make fuzz FUZZTIME=2000000x. Targets are listed as package:Name.
FUZZ_TARGETS := \
	./providers:FuzzParseChatRequest \
	./providers:FuzzValidJSON \
	./providers:FuzzParseOpenAIUsage \
	./providers/sse:FuzzReader \
	./providers/eventstream:FuzzDecoder \
	./providers/anthropic:FuzzTranslator \
	./ledger:FuzzSpoolDecode
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

# Go micro-benchmarks of the hot path.
bench-go:
	$(GO) test -run='^$$' -bench=. -benchmem ./providers/... ./handlers/... ./routing/... ./ledger/...

# Load benchmark: simulated upstream direct vs plain Caddy reverse_proxy vs the btl chain.
bench: build
	$(GO) build -o /tmp/btl-bench-load ./bench/load
	$(PIN_LOADGEN) /tmp/btl-bench-load -caddy ./caddy -out bench/results.md

# Chaos run (a few minutes, loopback only): two nodes on one PostgreSQL under load with
# database cuts and stalls, a kill -9, a storage-changing reload, a full spool tmpfs (when
# root) and client aborts, then the money-invariant checker; prints the figures. Needs
# PostgreSQL on 127.0.0.1:5432 (.ci/run starts one). BTL_CHAOS_SECONDS=100 sets the load.
chaos:
	CI=1 BTL_CHAOS=1 BTL_TEST_DATABASE_URL=$${BTL_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable} \
		$(GO) test -run='^TestChaos$$' -count=1 -v -timeout 20m ./caddymodule/

# xcaddy runs `go get` on the plugin path even when it is replaced by this directory. With
# GOPRIVATE alone Go then tries to fetch the (unpublished) repository and fails; with the proxy
# falling through to "off", Go treats the path as not found and uses the local replacement.
xcaddy:
	GOPROXY='https://proxy.golang.org|off' GONOSUMDB=github.com/badtheorylabs GOFLAGS=-mod=mod \
		$(GO) run github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5 build v2.11.9 --output ./caddy-xcaddy \
		--with github.com/badtheorylabs/btl-runtime=.

clean:
	rm -f caddy caddy-xcaddy

# Savings benchmark: eight seeded workloads × five providers, independent direct callers vs the
# gateway with Caddyfile.example's defaults (and the opt-in levers), under two models of
# OpenAI's prompt cache, with quality checks. Fails on a quality failure or a row that costs
# more than calling the provider directly.
bench-savings:
	$(GO) run ./bench/savings -out bench/savings-results.md
