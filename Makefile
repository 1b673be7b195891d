# conductor's Makefile: CI runs the same targets (.ci/run runs `make lint` and `make test`).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
GO    ?= go
BIN   := bin
PKGS  := ./...
# EXTERNAL is a module of its own that uses the public packages from outside
# (see its doc.go); ./... stops at its go.mod, so test and lint name it.
EXTERNAL := integration/external
export CGO_ENABLED ?= 0
# The revision --version prints where Go records none (GOFLAGS=-buildvcs=false).
REVISION := $(shell git rev-parse HEAD 2>/dev/null)
MODIFIED := $(shell test -n "$$(git status --porcelain --untracked-files=no 2>/dev/null)" && echo true)
LDFLAGS  := -X github.com/conductor-run/conductor/internal/version.revision=$(REVISION) -X github.com/conductor-run/conductor/internal/version.modified=$(MODIFIED)

.PHONY: help build run test test-short bench chaos soak lint fuzz console-screenshots docker compose-up compose-down nats-server docker-nats compose-cluster-up compose-cluster-down clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

build: ## build conductord, workerd, conductorctl and the example workers into bin/
	@if [ -n "$(TALK)" ]; then echo "==> building conductord, workerd, conductorctl and the example workers into $(BIN)/ (the first build downloads modules: a few minutes; each binary is named as it compiles)"; fi
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" $(if $(TALK),-v )-o $(BIN)/ ./cmd/... ./examples/...$(if $(TALK), 2>&1 | ./scripts/build-progress.awk)
	@if [ -n "$(TALK)" ]; then echo "==> built in $(BIN)/: $$(cd $(BIN) && echo *)"; fi

# run's build says what it does (TALK): a line per step, each binary as it
# compiles (and a count of the other packages), the binaries built; `make
# build` alone stays as quiet as go build.
run: TALK := 1
run: build ## start a local cluster (conductord + workerd with the squares pool; HTTP=, NATS=, DATA= move it); Ctrl-C stops it
	./scripts/run-local.sh

test: ## run every test with the race detector, then those of integration/external (the public API from outside)
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 30m $(PKGS)
	cd $(EXTERNAL) && CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 10m ./...

test-short: ## unit tests only, no race detector
	$(GO) test -short -count=1 $(PKGS)

bench: build ## run the benchmarks; figures go to docs/benchmarks.md
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 60m ./pkg/... ./internal/...
	$(GO) test -run '^$$' -bench . -benchtime 1x -count=1 -timeout 60m ./integration/

chaos: ## the long chaos run: 100,000 jobs on 3 hosts under kills and stops, and the full-disk phase (as root; CHAOS_DISK=1 fails rather than skip it without; docs/reliability.md)
	CHAOS=long $(GO) test -count=1 -run '^TestChaos_' -v -timeout 40m ./integration/

soak: ## steady load on conductord and 2 hosts for SOAK_DURATION (default 10m): figures each minute, then their slopes
	CONDUCTOR_BUILD_TAGS=pprof SOAK_DURATION=$${SOAK_DURATION:-10m} $(GO) test -count=1 -run '^TestSoak$$' -v -timeout 3h ./integration/

console-screenshots: ## drive the console in headless Chromium and save its pictures to docs/console/*.png (docs/console.md)
	CONSOLE_SCREENSHOTS=docs/console $(GO) test -count=1 -run '^TestConsole_Browser$$' -v -timeout 10m ./integration/

lint: ## gofmt every tracked .go file, go vet both modules (this one and integration/external)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	cd $(EXTERNAL) && $(GO) vet ./...

fuzz: ## run each fuzz target for 30s
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 30s ./internal/proto/
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime 30s ./internal/proto/
	$(GO) test -run '^$$' -fuzz '^FuzzAppend$$' -fuzztime 30s ./internal/proto/
	$(GO) test -run '^$$' -fuzz '^FuzzJobAppendJSON$$' -fuzztime 30s ./internal/wire/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEnds$$' -fuzztime 30s ./internal/wire/
	$(GO) test -run '^$$' -fuzz '^FuzzParseLogSeq$$' -fuzztime 30s ./internal/wire/
	$(GO) test -run '^$$' -fuzz '^FuzzCheckTailRequest$$' -fuzztime 30s ./internal/agent/
	$(GO) test -run '^$$' -fuzz FuzzParseSpec -fuzztime 30s ./pkg/broker/
	$(GO) test -run '^$$' -fuzz FuzzRun -fuzztime 30s ./pkg/worker/

docker: build ## build the conductor:dev image (FROM scratch, the static binaries)
	docker build -t conductor:dev .

compose-up: docker ## start conductord and two workerd hosts in containers (API on 127.0.0.1:7070; credentials issued once into .compose)
	./scripts/compose-creds.sh
	docker-compose up -d

compose-down: ## stop the containers and remove their data
	docker-compose down -v

# The cluster profile (docker-compose.cluster.yml, docs/deployment.md "The
# compose cluster") runs under a project name of its own, so that it and
# compose-up's cluster never touch each other's containers or volumes.
CLUSTER_COMPOSE := docker-compose -p conductor-cluster -f docker-compose.cluster.yml

nats-server: ## build bin/nats-server, static, from the nats-server module version go.mod requires
	$(GO) build -trimpath -o $(BIN)/nats-server github.com/nats-io/nats-server/v2

docker-nats: nats-server ## build the conductor-nats:dev image (FROM scratch, bin/nats-server; Dockerfile.nats)
	docker build -f Dockerfile.nats -t conductor-nats:dev .

compose-cluster-up: docker docker-nats ## start the cluster profile: 3 NATS nodes in one JetStream cluster, 2 conductords (APIs on 127.0.0.1:7071 and :7072), 3 workerd hosts (secrets issued once into .compose-cluster)
	./scripts/compose-cluster-creds.sh
	$(CLUSTER_COMPOSE) up -d

compose-cluster-down: ## stop the cluster profile's containers and remove their data (its secrets in .compose-cluster stay)
	$(CLUSTER_COMPOSE) down -v

clean: ## remove bin/ and the local cluster's data/
	rm -rf $(BIN) data
