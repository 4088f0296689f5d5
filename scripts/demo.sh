#!/usr/bin/env bash
# The demo: the example application's reachability before and after its policies, and why one
# flow is denied.
set -euo pipefail
BIN=${1:-bin/rampart}
cd "$(dirname "$0")/.."
bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

bold "The example cluster (examples/cluster): 5 namespaces, 7 pods, no policy yet"
"$BIN" policy validate -f examples/cluster
bold "Reachability without policy: everything is open"
"$BIN" policy matrix -f examples/cluster --ports 8080/TCP,5432/TCP

bold "Policies (examples/policies): default deny, DNS, the request path, admin guard rails"
"$BIN" policy validate -f examples/policies
bold "Reachability with policy"
"$BIN" policy matrix -f examples --ports 8080/TCP,5432/TCP,53/UDP

bold "Why can't the frontend talk to the database directly?"
"$BIN" explain -f examples --from frontend/web-0 --to db/postgres-0 --port 5432
bold "Why can the api reach the database?"
"$BIN" explain -f examples --from backend/api-0 --to db/postgres-0 --port 5432
