# linkhop — `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
FUZZTIME ?= 2s

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.PHONY: redis
redis: ## install redis-server from Debian's packages when it is missing
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "redis-server not found: installing Debian's redis-server package"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y redis-server; \
	}

.PHONY: test
test: redis ## what CI runs: vet (every build tag), the race-enabled tests, short fuzz runs
	$(GO) vet -tags faults,soak ./...
	$(GO) test -race -count=1 -timeout 8m ./...
	cd deploy/k8s && $(GO) vet ./... && $(GO) test -mod=mod -count=1 ./...
	@$(MAKE) --no-print-directory fuzz-short

.PHONY: fuzz-short
fuzz-short: ## run every fuzz target for FUZZTIME (default 2s); a finding must reproduce to fail
	@GO=$(GO) FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

.PHONY: fuzz
fuzz: ## run every fuzz target for 2 minutes
	@$(MAKE) --no-print-directory fuzz-short FUZZTIME=2m

.PHONY: bench
bench: redis ## run the benchmarks and write docs/benchmarks.md
	$(GO) run ./bench -out docs/benchmarks.md

GOLANGCI_LINT ?= $(shell command -v golangci-lint || echo $$($(GO) env GOPATH)/bin/golangci-lint)

.PHONY: lint
lint: ## golangci-lint v2 with .golangci.yml, and go vet, with every build tag (faults, soak)
	@[ -x "$(GOLANGCI_LINT)" ] || $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
	$(GO) vet -tags faults,soak ./...
	$(GOLANGCI_LINT) run ./...
	cd deploy/k8s && $(GOLANGCI_LINT) run ./...
	@$(MAKE) --no-print-directory lint-openapi
	@$(MAKE) --no-print-directory vulncheck

GOVULNCHECK ?= $(shell command -v govulncheck || echo $$($(GO) env GOPATH)/bin/govulncheck)

.PHONY: vulncheck
vulncheck: ## govulncheck: known vulnerabilities in the code paths linkhop calls (needs vuln.go.dev)
	@[ -x "$(GOVULNCHECK)" ] || $(GO) install golang.org/x/vuln/cmd/govulncheck@v1.9.0
	@if curl -sfm 10 -o /dev/null https://vuln.go.dev/index/db.json; then \
		$(GOVULNCHECK) ./... && cd deploy/k8s && $(GOVULNCHECK) ./...; \
	else echo "vulncheck: the vulnerability database (vuln.go.dev) cannot be reached from here; NOT checked"; fi

.PHONY: lint-openapi
lint-openapi: ## lint httpapi/openapi.json with Redocly CLI (needs Node.js; skipped without npx)
	@if command -v npx >/dev/null 2>&1; then \
		npx --yes @redocly/cli@2.77.0 lint --config .redocly.yaml --format=summary httpapi/openapi.json; \
	else echo "lint-openapi: npx not found (install Node.js); skipped"; fi

.PHONY: run
run: ## the one-process dev mode
	$(GO) run ./cmd/api -dev

.PHONY: test-faults
test-faults: redis ## fault-injection tests against the built binaries (several minutes; not in make test)
	$(GO) test -race -tags faults -count=1 -timeout 30m ./internal/faults/...

.PHONY: soak
soak: redis ## 5-minute mixed-traffic soak with a worker restart; appends to docs/reliability.md (not in CI)
	SOAK_REPORT=$(CURDIR)/docs/reliability.md $(GO) test -tags faults,soak -count=1 -timeout 30m -run '^TestSoak$$' -v ./internal/faults/...
