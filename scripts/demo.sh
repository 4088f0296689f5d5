#!/usr/bin/env bash
# The demo: the example application in a lab of network namespaces, its reachability as the
# kernel enforces it before and after its policies, its images' known vulnerabilities ranked by
# how reachable each pod is, why one flow is denied and which policy denied the real traffic
# (flow records), the same under the eBPF dataplane, policies recommended from the application's
# observed traffic (checked, then enforced), then teardown.
set -euo pipefail
BIN=${1:-bin/rampart}
cd "$(dirname "$0")/.."
LAB=demo
GO=${GO:-go}
WORK=""
bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
  "$BIN" lab down --name "$LAB" >/dev/null 2>&1 || true
  "$BIN" lab down --name "$LAB-ebpf" >/dev/null 2>&1 || true
  "$BIN" lab down --name "$LAB-fix" >/dev/null 2>&1 || true
  [ -z "$WORK" ] || rm -rf "$WORK"
}
trap cleanup EXIT
cleanup
WORK=$(mktemp -d /tmp/rampart-demo.XXXXXX)

if [ "$(id -u)" -ne 0 ]; then
  echo "The lab needs root (it creates network namespaces). Showing the evaluator's view instead."
  "$BIN" policy matrix -f examples --ports 8080/TCP,5432/TCP,53/UDP
  "$BIN" explain -f examples --from frontend/web-0 --to db/postgres-0 --port 5432
  exit 0
fi

probe() {
  for p in "8080 TCP" "5432 TCP" "53 UDP"; do
    set -- $p
    "$BIN" lab probe --name "$LAB" --port "$1" --protocol "$2" --timeout 700ms -o matrix
    echo
  done
}

# The example images (docker-save tarballs) and an offline vulnerability database for the
# "how does this impact my cluster?" part.
"$GO" run examples/images/build.go "$WORK" >/dev/null
"$BIN" db import --db "$WORK/db" internal/vuln/testdata/osv >/dev/null
scan() {
  local args=()
  for img in web api postgres coredns prometheus; do args+=(--image "registry.example/$img:1.0=$WORK/$img.tar"); done
  "$BIN" scan cluster --db "$WORK/db" --lab "$LAB" --no-pull "${args[@]}" > "$WORK/scan.txt"
  "$@" "$WORK/scan.txt"
}

bold "A lab of 2 nodes from examples/cluster: 5 namespaces, 7 pods serving their ports, 4 Services"
"$BIN" lab up --name "$LAB" --nodes 2 --dataplane iptables -f examples/cluster
"$BIN" lab get pods --name "$LAB"

bold "Reachability the kernel enforces before any policy: everything is open"
probe

bold "Known vulnerabilities in the images, ranked by exposure: with no policy every pod is open to any address"
scan head -n 8

bold "Applying examples/policies: default deny, DNS, the request path, admin guard rails"
"$BIN" lab apply --name "$LAB" -f examples/policies
"$BIN" lab get policies --name "$LAB"

bold "Reachability the kernel enforces now (probes through the kernel, not a simulation)"
probe

bold "How does this impact my cluster? The same findings, ranked by who can reach each pod now"
scan cat

bold "Why can't the frontend reach the database directly?"
"$BIN" explain -f examples --from frontend/web-0 --to db/postgres-0 --port 5432

bold "Which policy decided the real traffic? The flow records of the probes denied on their way to the database"
"$BIN" lab flows --name "$LAB" --verdict denied --pod db/postgres-0 | sed -n 1,8p

bold "The evaluator beside what the kernel recorded for frontend/web-0 -> db/postgres-0:5432"
"$BIN" explain --live --lab "$LAB" --from frontend/web-0 --to db/postgres-0 --port 5432 | tail -n 4

bold "Does the kernel agree with the evaluator on every pod, port and protocol?"
"$BIN" policy matrix -f examples -o json > /tmp/rampart-demo-expect.json
sed -i 's/"allowed"/"connected"/' /tmp/rampart-demo-expect.json
"$BIN" lab probe --name "$LAB" --via pod --timeout 700ms --expect /tmp/rampart-demo-expect.json -o json > /dev/null

bold "The same cluster and policies under the eBPF dataplane (TC programs, connect-time Services)"
"$BIN" lab up --name "$LAB-ebpf" --nodes 2 --dataplane ebpf -f examples/cluster -f examples/policies >/dev/null
rules=0
for n in 0 1; do
  rules=$((rules + $(ip netns exec "rl-$LAB-ebpf_n$n" iptables-save | grep -c '^-A' || true)))
done
echo "iptables rules in the node namespaces: $rules"
"$BIN" lab probe --name "$LAB-ebpf" --timeout 700ms --expect /tmp/rampart-demo-expect.json -o json > /dev/null
echo "flow records of the eBPF programs (ring buffer), denied ones naming their policy:"
"$BIN" lab flows --name "$LAB-ebpf" --verdict denied --pod db/postgres-0 | sed -n 1,4p
"$BIN" lab down --name "$LAB-ebpf"

bold "From exposure to a fix: policies recommended from the application's observed traffic"
FIX=$LAB-fix
"$BIN" lab up --name "$FIX" --nodes 2 --dataplane ebpf -f examples/cluster >/dev/null
echo "the application's request path, as probes (web -> api through its Service, api -> postgres, DNS, metrics):"
hop() { "$BIN" lab probe --name "$FIX" --from "$1" --to "$2" --port "$3" --protocol "$4" --via "$5" --timeout 700ms | tail -n 1; }
hop frontend/web-0 backend/api-0 8080 TCP service
hop frontend/web-1 backend/api-1 8080 TCP pod
hop backend/api-0 db/postgres-0 5432 TCP pod
hop backend/api-1 db/postgres-0 5432 TCP pod
hop monitoring/prometheus-0 backend/api-0 9090 TCP pod
hop frontend/web-0 kube-system/coredns-0 53 UDP pod
sleep 1 # the last records leave the agents' aggregators
"$BIN" lab flows --name "$FIX" --verdict allowed -o json > "$WORK/flows.json"
"$BIN" lab flows --name "$FIX" --verdict allowed | sed -n 1,7p
echo
echo "rampart policy recommend --lab $FIX --enforce:"
"$BIN" policy recommend --lab "$FIX" --enforce > "$WORK/proposal.yaml"
grep -E '^  (name|namespace):' "$WORK/proposal.yaml" | paste - - | sed 's/^ */  /'
echo
echo "rampart policy diff (the evaluator: does the proposal break an observed flow?):"
"$BIN" policy diff --lab "$FIX" --proposed "$WORK/proposal.yaml" --flows "$WORK/flows.json"
args=()
for img in web api postgres coredns prometheus; do args+=(--image "registry.example/$img:1.0=$WORK/$img.tar"); done
echo
echo "what it would do to the findings (scan cluster --with-policies), before enforcing anything:"
"$BIN" scan cluster --db "$WORK/db" --lab "$FIX" --no-pull "${args[@]}" --with-policies "$WORK/proposal.yaml" > "$WORK/whatif.txt"
sed -n 3p "$WORK/whatif.txt"
grep -A2 -E 'internet->(pods|none|external) ' "$WORK/whatif.txt" | grep -v '^--$' | head -n 9
echo "(kube-system is covered only when named: recommend --namespace kube-system)"
"$BIN" lab apply --name "$FIX" -f "$WORK/proposal.yaml" >/dev/null
echo
echo "enforced: the observed hops still connect through the kernel, an unobserved one does not:"
hop backend/api-0 db/postgres-0 5432 TCP pod
hop frontend/web-0 backend/api-0 8080 TCP service
hop frontend/web-0 db/postgres-0 5432 TCP pod
"$BIN" lab down --name "$FIX"

bold "Tearing the lab down"
"$BIN" lab down --name "$LAB"
rm -rf "$WORK"
trap - EXIT
echo "done: no namespace, link or rule of the lab is left"
