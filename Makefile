# kreplay — `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/kreplay
EVENTS ?= 1000000
GROWTH ?= 3000000
export KREPLAY_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable

.PHONY: help build test test-race lint fuzz demo bench soak postgres clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/kreplay
	$(GO) build -o $(BIN) ./cmd/kreplay

postgres: ## make sure KREPLAY_TEST_DATABASE_URL's PostgreSQL answers (starts/installs a local one if needed)
	@bash scripts/ensure-postgres.sh

test: postgres ## run the test suite against real PostgreSQL and kfake (short fault scenarios included)
	$(GO) test -count=1 -timeout 15m ./...

test-race: postgres ## the test suite with the race detector
	$(GO) test -count=1 -race -timeout 30m ./...

lint: ## gofmt, go vet, and golangci-lint when installed
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	@if command -v golangci-lint >/dev/null; then golangci-lint run ./...; else echo "golangci-lint not installed; ran gofmt and go vet only"; fi

fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	@for f in $$($(GO) test -list 'Fuzz.*' ./topology/ | grep ^Fuzz); do \
		$(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$${FUZZTIME:-30s} ./topology/ || exit 1; done

demo: postgres ## the whole story on the embedded broker and the PostgreSQL `make postgres` checks
	$(GO) run ./cmd/kreplay demo --database-url "$$KREPLAY_TEST_DATABASE_URL"

bench: postgres ## replay throughput side by side at EVENTS (1000000), then its growth at GROWTH (3000000; GROWTH=0: off); writes bench/results.json
	$(GO) run ./bench -events $(EVENTS) -growth $(GROWTH)

soak: postgres ## the long fault scenarios (30 kills, PostgreSQL restart, Kafka faults, 1M-event load); prints a table
	@mkdir -p bin; rm -f bin/soak-table.txt
	KREPLAY_SOAK=1 KREPLAY_FAULTS_TABLE=$(CURDIR)/bin/soak-table.txt $(GO) test -count=1 -timeout 90m -run 'TestFault' ./faults/; \
		status=$$?; echo; cat bin/soak-table.txt 2>/dev/null; exit $$status

clean: ## remove build output
	rm -rf bin
