# petitiond: `make run` starts the demo (Redis, the development sink, the
# daemon, a demo campaign); `make test` runs every test against real
# redis-server, Postfix, Dovecot and promtool, installing them if missing.

SHELL   := /bin/bash
GO      ?= go
BIN     := bin/petitiond
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
SAMPLES ?= ../shared/bounce-samples

.PHONY: all build run test deps vet eval-bounces bench clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/petitiond

run: deps build
	demo/run.sh $(BIN)

deps:
	scripts/install-deps.sh

vet:
	gofmt -l . | (! grep .) || (echo "gofmt would change the files above" >&2; exit 1)
	$(GO) vet ./...

# The packages first, with the race detector; then ./e2e alone: it runs the
# daemons as separate processes and measures pacing and idle cost, which
# must not compete for the two cores with other packages' tests.
test: deps vet
	$(GO) test -race -count=1 -p 2 -timeout 20m $$($(GO) list ./... | grep -v /e2e$$)
	$(GO) test -count=1 -timeout 30m -v ./e2e/ 2>&1 | grep -v '^{"time' | grep -v '^        {'; exit $${PIPESTATUS[0]}

eval-bounces:
	$(GO) run ./bounce/internal/evalbounces -dir $(SAMPLES)

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin .demo
