# rampart: `make demo` shows it working, `make test` runs every test. Both install what they need.
SHELL := /bin/bash
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN := bin/rampart
# Debian packages the lab, the dataplanes and the tests use (util-linux: nsenter; clang, llvm and
# libbpf-dev: make generate, which compiles the BPF programs; the build itself needs none of them;
# nmap and hping3: the threat-defense tests attack lab pods with them).
APT_PACKAGES := iproute2 iptables ipset nftables util-linux clang llvm libbpf-dev linux-libc-dev python3 librsvg2-bin nmap hping3

# staticcheck, pinned: `make test` fails on its findings.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

# What the real cluster needs beyond that (make cluster, make e2e).
CLUSTER_PACKAGES := containerd runc containernetworking-plugins openssl curl netcat-openbsd bind9-dnsutils
DATAPLANE ?= iptables

.PHONY: e2e-services all build deps demo test vet fmt-check staticcheck generate check-generate fuzz bench image clean cluster cluster-down e2e cluster-smoke conformance cnp-conformance

all: build

deps:
	@scripts/deps.sh $(APT_PACKAGES)

build:
	@test -x "$(GO)" || { echo "Go is required (looked for go in PATH and /usr/local/go/bin)"; exit 1; }
	$(GO) build -o $(BIN) ./cmd/rampart

demo: deps build
	@scripts/demo.sh $(BIN)

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run $(STATICCHECK) ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Compile the BPF programs and regenerate their Go bindings (committed).
generate: deps
	$(GO) generate ./internal/dataplane/ebpf/

# Fail when the committed BPF objects are not what the sources compile to.
check-generate: generate
	@git diff --quiet -- internal/dataplane/ebpf/ || { echo "BPF objects are stale: run make generate and commit"; git diff --stat -- internal/dataplane/ebpf/; exit 1; }

# Unit, property and (as root) privileged tests, with the root network namespace snapshotted
# before and compared after: the run fails if anything in it changed.
test: deps build vet fmt-check staticcheck check-generate
	@scripts/test.sh "$(GO)"

# Every conformance suite (NetworkPolicy, ANP/BANP, ClusterNetworkPolicy) against the evaluator
# and in the lab on both dataplanes, 1 and 2 nodes, alone and verbose (make test runs the
# two-node labs only; RAMPART_CONFORMANCE_COMBOS=iptables/1,ebpf/2 narrows it).
conformance: deps build
	$(GO) test ./test/conformance/ -count=1 -v -timeout 60m

# Benchmarks (root: they build network namespaces). Results land in bench/results/.
bench: deps build
	RAMPART_BENCH=1 $(GO) test ./bench/ -run 'TestScale|TestBench' -v -count=1 -timeout 60m
	python3 scripts/plot-dataplane.py bench/results/dataplane.json docs/dataplane-ratios.svg
	python3 scripts/plot-agent.py bench/results/agent.json docs/agent-latency.svg
	python3 scripts/plot-connections.py bench/results/connections.json docs/connection-rates.svg
	python3 scripts/plot-blocklist.py bench/results/blocklist.json docs/blocklist.svg
	python3 scripts/plot-detection.py bench/results/detection.json docs/detection-latency.svg
	$(GO) test ./bench/ -run XXX -bench . -benchtime 20x

# The agent's OCI image as a tarball (no Docker, no registry): bin/rampart-image.tar.
image: deps
	@scripts/image.sh "$(GO)"

# A real single-node cluster (kubelet, containerd, the control plane) in its own namespaces, with
# rampart deployed by kubectl apply -k deploy/: DATAPLANE=iptables (with kube-proxy) or ebpf
# (without). Writes .cluster/env (NETNS, KUBECONFIG). scripts/cluster.sh kubectl ... reaches it.
cluster: deps
	@scripts/deps.sh $(CLUSTER_PACKAGES)
	@scripts/cluster.sh up $(DATAPLANE)

cluster-down:
	@scripts/cluster.sh down

# The upstream [sig-network] Netpol e2e tests against the running cluster (SCTP ones skipped:
# this kernel has no SCTP sockets). Report in .cluster/e2e/. Without a cluster, or with one of
# another dataplane than a DATAPLANE given, it makes that cluster first.
e2e:
	@want=$(if $(filter command line environment,$(origin DATAPLANE)),$(DATAPLANE)); \
	if [ ! -f .cluster/env ] || { [ -n "$$want" ] && ! grep -qx "DATAPLANE=$$want" .cluster/env; }; then \
	  $(MAKE) cluster DATAPLANE=$${want:-iptables}; fi
	@scripts/cluster.sh e2e

# The upstream [sig-network] Services tests marked [Conformance] (all 17 run on one node) against
# the running cluster, made first as for e2e: with DATAPLANE=ebpf rampart replaces kube-proxy,
# with DATAPLANE=iptables kube-proxy translates (the reference). Report in .cluster/e2e/.
e2e-services:
	@want=$(if $(filter command line environment,$(origin DATAPLANE)),$(DATAPLANE)); \
	if [ ! -f .cluster/env ] || { [ -n "$$want" ] && ! grep -qx "DATAPLANE=$$want" .cluster/env; }; then \
	  $(MAKE) cluster DATAPLANE=$${want:-ebpf}; fi
	@E2E_FOCUS='\[sig-network\] Services .*\[Conformance\]' scripts/cluster.sh e2e

# The upstream ClusterNetworkPolicy conformance suite (network-policy-api; SCTP left out: this
# kernel has no SCTP sockets) against the running cluster, made first as for e2e. Report in
# .cluster/cnp-conformance/.
cnp-conformance:
	@want=$(if $(filter command line environment,$(origin DATAPLANE)),$(DATAPLANE)); \
	if [ ! -f .cluster/env ] || { [ -n "$$want" ] && ! grep -qx "DATAPLANE=$$want" .cluster/env; }; then \
	  $(MAKE) cluster DATAPLANE=$${want:-iptables}; fi
	@scripts/cluster.sh cnp-conformance

# CI's check of the real cluster (after make test): on both dataplanes, a cluster from scratch,
# scripts/cluster.sh check and five upstream Netpol tests, then cluster-down.
cluster-smoke: deps
	@scripts/deps.sh $(CLUSTER_PACKAGES)
	@scripts/cluster.sh smoke

fuzz:
	$(GO) test ./internal/model -run XXX -fuzz FuzzDecode -fuzztime 30s
	$(GO) test ./internal/model -run XXX -fuzz FuzzParseCIDR -fuzztime 15s
	$(GO) test ./internal/policy -run XXX -fuzz FuzzParsePorts -fuzztime 15s

clean:
	rm -rf bin
