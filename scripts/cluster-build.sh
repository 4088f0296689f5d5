#!/bin/bash
# Builds the test cluster's binaries from test/cluster (k8s.io/kubernetes and etcd at the
# versions its go.mod pins, the upstream netpol e2e suite, agnhost, ginkgo) and test/coredns
# into a cache keyed by those modules, and prints the directory. Warm, it only checks the key.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mod=$root/test/cluster
version=$(awk '$1=="k8s.io/kubernetes"{print $2; exit}' "$mod/go.mod")
dns=$root/test/coredns
key=$(cat "$mod/go.mod" "$mod/go.sum" "$mod"/e2e/*.go "$mod"/etcd/*.go "$dns/go.mod" "$dns/go.sum" "$dns"/*.go "$0" | sha256sum | cut -c1-12)
out=${RAMPART_CACHE:-$HOME/.cache/rampart}/cluster/$version-$key
if [ -x "$out/e2e-netpol.test" ]; then echo "$out"; exit 0; fi
tmp=$out.tmp.$$
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
minor=${version#v1.}; minor=${minor%%.*}
ld="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 \
-X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=$version -X k8s.io/client-go/pkg/version.gitMajor=1 \
-X k8s.io/client-go/pkg/version.gitMinor=$minor"
cd "$mod"
export CGO_ENABLED=0
echo "cluster-build: building Kubernetes $version into $out (cold: ~15 minutes)" >&2
go build -trimpath -ldflags "$ld" -o "$tmp/" tool ./etcd >&2
go test -c -trimpath -ldflags "$ld" -o "$tmp/e2e-netpol.test" ./e2e >&2
(cd "$dns" && go build -trimpath -ldflags "-s -w" -o "$tmp/coredns" .) >&2
mv "$tmp" "$out"
echo "$out"
