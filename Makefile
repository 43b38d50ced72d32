# mtftpd — make help lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN := ./mtftpd
# Test timeout per package binary. The e2e package is the longest (its QEMU
# boots take turns with the other packages' lab tests: testutil.Heavy) and
# took 11–18 minutes on 2 cores; the whole suite must stay under CI's 30.
TEST_TIMEOUT ?= 26m
FUZZTIME ?= 5s

.PHONY: help build run test test-go e2e-slow vet soak bench bench-dhcp bench-http bench-mcast bench-status bench-storm bench-peers bench-image fuzz-smoke fuzz clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build ./mtftpd (static, version from git describe)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/mtftpd

run: build ## serve the embedded demo root on 127.0.0.1:6969
	$(BIN) serve --demo

test: ## install test dependencies (Debian, idempotent) and run every test
	./scripts/test-deps.sh
	$(MAKE) vet
	$(MAKE) test-go
	$(MAKE) fuzz-smoke
	@if [ "$$(id -u)" -eq 0 ]; then ./scripts/soak.sh 2m; else echo "soak: skipped (needs root for the lab)"; fi

# test-go pipes go test -json through cmd/testsummary: go test's usual
# output (every failing test in full), then each skipped test with its
# reason; as root it fails when a test skipped for want of root, the lab,
# QEMU or a package (the slow runs of e2e-slow are expected skips).
test-go: ## run the Go tests (race detector, shuffled) and list what skipped and why
	set -o pipefail; $(GO) test -json -race -shuffle=on -count=1 -timeout $(TEST_TIMEOUT) ./... | $(GO) run ./cmd/testsummary

e2e-slow: ## the slow firmware runs (root, QEMU): every local-boot command on SeaBIOS and OVMF, the golden disk booted directly, the reimaging loop through pxelinux, UEFI HTTP Boot beside another DHCP server, ARM64 UEFI through shim, the single-port TFTP boots, Secure Boot over HTTP Boot
	MTFTPD_E2E_SLOW=1 $(GO) test -count=1 -timeout 60m -v -run 'TestGoldenDiskBoots|TestLocalBootAfterNetwork|TestReimagePXELinux|TestUEFIHTTPBootProxy|TestARM64UEFIPXEShim|TestSinglePort|TestSecureBootHTTPStopsAtGRUB' ./e2e

vet: ## gofmt, go vet and staticcheck (a go.mod tool: offline once downloaded) for linux, darwin and windows
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	GOOS=windows $(GO) vet ./...
	@# go tool -n builds staticcheck for this host and prints its path, so
	@# the same binary checks the darwin and windows files too.
	sc=$$($(GO) tool -n staticcheck) && $$sc ./... && GOOS=darwin $$sc ./... && GOOS=windows $$sc ./...

bench: build ## Go benchmarks, then mtftpd vs tftpd-hpa vs atftpd (scripts/bench-unicast.sh)
	$(GO) test -run '^$$' -bench . -benchmem ./...
	./scripts/bench-unicast.sh

bench-mcast: ## native multicast vs udpcast in the lab: 50 receivers clean and with 5 % loss, 30 behind a 100 Mbit/s server port (root)
	./scripts/bench-mcast.sh

bench-image: ## disk images in the lab: 50 receivers, image deploy vs udp-sender + zstd; create vs zstd -T0; one receiver vs its disk and network; receiver RSS (root) -> docs/benchmarks-image.md
	./scripts/bench-image.sh

bench-http: build ## HTTP throughput of a 1 GiB file: mtftpd's mirror vs nginx (scripts/bench-http.sh)
	MTFTPD_BIN=$(abspath $(BIN)) ./scripts/bench-http.sh

bench-dhcp: ## DHCP storm in the lab: mtftpd vs dnsmasq (and kea if installed)
	./scripts/bench-dhcp.sh

bench-status: ## TFTP throughput at 200 concurrent transfers with and without status pages open
	./scripts/bench-status.sh

bench-storm: ## boot storm of 200 and 500 BIOS clients, server limited to half a core: mtftpd (both modes) vs tftpd-hpa (root)
	./scripts/bench-storm.sh

bench-peers: ## mtftpd vs tftpd-hpa, atftpd, dnsmasq (TFTP) and dnsmasq, Kea (DHCP) in the lab -> docs/benchmarks.md
	./scripts/bench-peers.sh

soak: build ## mixed unicast/multicast/DHCP/HTTP load in the lab for SOAK_DURATION (20m), sampled into a CSV and a plot
	MTFTPD_BIN=$(abspath $(BIN)) ./scripts/soak.sh $(or $(SOAK_DURATION),20m) $(SOAK_OUT)

fuzz-smoke: ## run every fuzz target for $(FUZZTIME)
	./scripts/fuzz.sh $(FUZZTIME)

fuzz: ## run every fuzz target for 10 minutes
	./scripts/fuzz.sh 10m

clean: ## remove build output
	rm -f $(BIN)
