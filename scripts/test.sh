#!/usr/bin/env bash
# Run the whole test suite. As root, snapshot the root network namespace first and fail if the
# tests changed it (links, addresses, routes, iptables, nft, ipsets, tc, XDP).
set -euo pipefail
GO=${1:-go}
here=$(cd "$(dirname "$0")/.." && pwd)
hostcheck=""
for c in "$here/../shared/tools/hostcheck" "$here/shared/tools/hostcheck"; do
  [ -x "$c" ] && hostcheck=$c && break
done
snap=""
if [ "$(id -u)" -eq 0 ] && [ -n "$hostcheck" ]; then
  snap=$(mktemp)
  "$hostcheck" save "$snap"
fi
# The lab conformance matrix runs on two-node labs here (every case sees same-node and
# cross-node pairs there); `make conformance` runs the whole matrix, one-node labs too. It keeps
# make test within its 25-minute budget on a cold machine.
export RAMPART_CONFORMANCE_COMBOS="${RAMPART_CONFORMANCE_COMBOS:-iptables/2,ebpf/2}"
status=0
# Compile the integration tests' API server (kube-apiserver + etcd, its own module) before the
# suite: compiling it while the lab tests run would starve their probes. Later builds hit the cache.
(cd "$here/test/apiserver" && "$GO" build -o /dev/null .) || status=$?
# The race detector on the packages of concurrent code where it stays within the budget (the
# agent, its runner and sources, the lab controller, and the lab with its in-process node
# agents); everything else without it.
race=(./internal/agent/... ./internal/source/... ./internal/lab/...)
"$GO" test -race -count=1 -timeout 10m "${race[@]}" || status=$?
mapfile -t racelist < <("$GO" list "${race[@]}")
mapfile -t rest < <("$GO" list ./... | grep -vxF -f <(printf '%s\n' "${racelist[@]}"))
"$GO" test -count=1 -timeout 18m "${rest[@]}" || status=$?
if [ -n "$snap" ]; then
  if ! "$hostcheck" diff "$snap"; then
    echo "FAIL: the tests changed the host's root network namespace" >&2
    status=1
  fi
  rm -f "$snap"
fi
exit $status
