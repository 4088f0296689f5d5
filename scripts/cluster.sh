#!/bin/bash
# A real single-node Kubernetes cluster on this machine, with rampart deployed as a DaemonSet:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and (iptables dataplane)
# kube-proxy built from the k8s.io/kubernetes module (scripts/cluster-build.sh), containerd and
# runc and the ptp/host-local CNI plugins from Debian.
#
#   scripts/cluster.sh up [iptables|ebpf]   build what is missing, start, wait for Ready
#   scripts/cluster.sh down                 stop and remove everything, also after a crash
#   scripts/cluster.sh kubectl ARGS...      kubectl inside the node's network namespace
#   scripts/cluster.sh e2e [GINKGO ARGS]    the upstream NetworkPolicy e2e suite
#   scripts/cluster.sh cnp-conformance      the upstream ClusterNetworkPolicy conformance suite
#   scripts/cluster.sh check                a policy applied with kubectl is in force within 1s
#   scripts/cluster.sh image                rebuild rampart's image and roll the DaemonSet to it
#   scripts/cluster.sh smoke                both dataplanes: up, check, five upstream tests, down
#
# The host stays untouched: the node lives in its own network namespace (NETNS), a private mount
# namespace (/run, /var/lib, /var/log and the host-wide /proc/sys entries kubelet writes are
# private to it; a bpffs of its own at /sys/fs/bpf), a cgroup subtree of its own in every
# hierarchy (kubelet's cgroupRoot) and state under .cluster/. Everything it starts is in that
# subtree, so `down` ends exactly those processes, by the PIDs the subtree lists.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
C=$here/.cluster
S=$C/state
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin

NODE_NAME=rampart-node
NODE_IP=10.255.0.1
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10
NETNS_PREFIX=rampart-node-
CGROUP_PREFIX=rampart-cluster-
# Host-wide kernel settings kubelet writes or checks at start: private files in the node's mount
# namespace, so this machine's values stay as they are.
SYSCTLS=(kernel/panic kernel/panic_on_oops vm/overcommit_memory vm/panic_on_oom kernel/keys/root_maxkeys kernel/keys/root_maxbytes)

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }

hostcheck_bin() {
  local c
  for c in "$here/../shared/tools/hostcheck" "$here/shared/tools/hostcheck"; do
    [ -x "$c" ] && { echo "$c"; return; }
  done
}

# retry N CMD...: CMD until it succeeds, once a second, at most N times.
retry() {
  local n=$1 i
  shift
  for ((i = 0; i < n; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  return 1
}

load_env() {
  [ -f "$C/env" ] || die "no cluster: run make cluster"
  # shellcheck disable=SC1091
  . "$C/env"
}

in_node() { nsenter --net="/run/netns/$NETNS" -- "$@"; }

kubectl_node() { in_node "$BIN/kubectl" --kubeconfig "$C/kubeconfig" "$@"; }

# --- certificates and credentials -------------------------------------------------------------

pki() {
  local p=$C/pki
  mkdir -p "$p"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=rampart-cluster-ca" \
    -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$p/apiserver.key" -out "$p/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:%s,IP:%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' \
    "$API_SERVICE_IP" "$NODE_IP" >"$p/apiserver.ext"
  openssl x509 -req -in "$p/apiserver.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 30 \
    -extfile "$p/apiserver.ext" -out "$p/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  # One bearer token per component (token,user,uid,"groups").
  : >"$p/tokens.csv"
  local who
  local who file user group tok
  for who in "admin|admin|system:masters" "kubelet|system:node:$NODE_NAME|system:nodes" \
    "controller-manager|system:kube-controller-manager|" "scheduler|system:kube-scheduler|" "proxy|system:kube-proxy|"; do
    IFS='|' read -r file user group <<<"$who"
    tok=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    echo "$tok,$user,$file,\"$group\"" >>"$p/tokens.csv"
    kubeconfig "$tok" >"$C/$file.kubeconfig"
  done
  cp "$C/admin.kubeconfig" "$C/kubeconfig"
}

kubeconfig() {
  cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: rampart
  cluster: {server: "https://$NODE_IP:6443", certificate-authority: "$C/pki/ca.crt"}
users:
- name: user
  user: {token: "$1"}
contexts:
- name: rampart
  context: {cluster: rampart, user: user}
current-context: rampart
EOF
}

# --- configuration files ----------------------------------------------------------------------

configs() {
  mkdir -p "$S/cni/net.d" "$S/cni/ipam" "$S/containerd/root" "$S/kubelet" "$S/etcd" "$S/log" "$S/etc"
  cat >"$S/etc/containerd.toml" <<EOF
version = 2
root = "$S/containerd/root"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$S/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # Root here lacks CAP_SYS_RESOURCE: a sandbox's oom_score_adj of -998 would be refused.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$S/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
EOF
  cat >"$S/cni/net.d/10-rampart.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "rampart", "plugins": [
  {"type": "ptp", "mtu": 1500, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": "$S/cni/ipam", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
EOF
  cat >"$S/etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [$DNS_SERVICE_IP]
resolvConf: ""
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
serializeImagePulls: false
maxPods: 110
EOF
  cat >"$S/etc/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: "$C/proxy.kubeconfig"}
hostnameOverride: $NODE_NAME
clusterCIDR: $CLUSTER_CIDR
detectLocalMode: ClusterCIDR
oomScoreAdj: 0
# Leave the conntrack table's size and timeouts alone: some are host-wide.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
EOF
}

# --- inside the node's namespaces ---------------------------------------------------------------

# node runs in the node's network namespace and a new mount namespace (see up); it sets both up,
# starts the node's daemons and waits. Everything it starts inherits its cgroups.
node() {
  load_env
  local h
  for h in /sys/fs/cgroup/*/; do
    echo $$ >"$h$CGROUP/system/cgroup.procs"
  done
  mount -t tmpfs -o mode=755 tmpfs /run
  mkdir -p "$S/var/lib" "$S/var/log" "$S/sysctl"
  mount --bind "$S/var/lib" /var/lib
  mount --bind "$S/var/log" /var/log
  local s f
  for s in "${SYSCTLS[@]}"; do
    f=$S/sysctl/${s//\//.}
    cat "/proc/sys/$s" >"$f"
    mount --bind "$f" "/proc/sys/$s"
  done
  mount -t bpf bpf /sys/fs/bpf
  # Shared within this mount namespace only (it was copied private): containers' volumes with
  # mountPropagation (rampart's bpffs) need a shared or slave source.
  mount --make-rshared /

  ip link set lo up
  # The node's address, on a veth whose peer stays down (no dummy module here): traffic to
  # anything outside the node ends there, like on a dummy.
  ip link add node0 type veth peer name node0-peer
  ip addr add "$NODE_IP/24" dev node0
  ip link set node0 up
  ip route add default dev node0
  sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.forwarding=1
  # Conntrack's byte and packet counts, for rampart's flow records under iptables (the agent's
  # container cannot write /proc/sys; a node's administrator sets this). The netns's own.
  sysctl -qw net.netfilter.nf_conntrack_acct=1 2>/dev/null || true

  local L=$S/log
  "$BIN/etcd" --name "$NODE_NAME" --data-dir "$S/etcd" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
    --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster "$NODE_NAME=http://127.0.0.1:2380" \
    --quota-backend-bytes 2147483648 >"$L/etcd.log" 2>&1 &
  local p=$C/pki
  "$BIN/kube-apiserver" --etcd-servers http://127.0.0.1:2379 --advertise-address "$NODE_IP" --secure-port 6443 \
    --service-cluster-ip-range "$SERVICE_CIDR" --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --client-ca-file "$p/ca.crt" --token-auth-file "$p/tokens.csv" --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local --service-account-key-file "$p/sa.pub" \
    --service-account-signing-key-file "$p/sa.key" --allow-privileged=true --enable-admission-plugins NodeRestriction \
    --kubelet-preferred-address-types InternalIP --profiling=false >"$L/kube-apiserver.log" 2>&1 &
  retry 120 curl -sfk --max-time 2 "https://127.0.0.1:6443/readyz" -H "Authorization: Bearer $(admin_token)" ||
    die "kube-apiserver did not become ready: $L/kube-apiserver.log"
  "$BIN/kube-controller-manager" --kubeconfig "$C/controller-manager.kubeconfig" --use-service-account-credentials \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" --cluster-cidr "$CLUSTER_CIDR" \
    --service-cluster-ip-range "$SERVICE_CIDR" --leader-elect=false --bind-address 127.0.0.1 --profiling=false \
    >"$L/kube-controller-manager.log" 2>&1 &
  "$BIN/kube-scheduler" --kubeconfig "$C/scheduler.kubeconfig" --leader-elect=false --bind-address 127.0.0.1 \
    --profiling=false >"$L/kube-scheduler.log" 2>&1 &
  containerd --config "$S/etc/containerd.toml" >"$L/containerd.log" 2>&1 &
  retry 60 ctr version || die "containerd did not start: $L/containerd.log"
  local img
  for img in "$IMAGES"/*.tar "$here/bin/rampart-image.tar"; do
    ctr -n k8s.io images import "$img" >/dev/null || die "import $img"
  done
  "$BIN/kubelet" --config "$S/etc/kubelet.yaml" --kubeconfig "$C/kubelet.kubeconfig" --root-dir "$S/kubelet" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" >"$L/kubelet.log" 2>&1 &
  if [ "$DATAPLANE" = iptables ]; then
    "$BIN/kube-proxy" --config "$S/etc/kube-proxy.yaml" >"$L/kube-proxy.log" 2>&1 &
  fi
  touch "$C/node.started"
  wait
}

admin_token() { awk -F, '$3=="admin"{print $1}' "$C/pki/tokens.csv"; }

# --- up and down ------------------------------------------------------------------------------

# cgroups_of NAME: NAME's directory in every cgroup hierarchy.
cgroups_of() {
  local h
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h$1" ] && echo "$h$1"
  done
  return 0
}

make_cgroups() {
  local h d
  for h in /sys/fs/cgroup/*/; do
    for d in "$CGROUP" "$CGROUP/system"; do
      mkdir -p "$h$d"
      # A new v1 cpuset group starts with no CPUs and no memory nodes.
      if [ -f "$h$d/cpuset.cpus" ]; then
        cat "$(dirname "$h$d")/cpuset.cpus" >"$h$d/cpuset.cpus"
        cat "$(dirname "$h$d")/cpuset.mems" >"$h$d/cpuset.mems"
      fi
    done
  done
}

# kill_cgroup NAME: end every process in NAME's subtree (frozen first, so none forks meanwhile)
# and remove the subtree.
kill_cgroup() {
  local name=$1 fz=/sys/fs/cgroup/freezer/$1 i pids
  [ -d "$fz" ] && echo FROZEN >"$fz/freezer.state" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    pids=$(cgroups_of "$name" | while read -r d; do find "$d" -name cgroup.procs -exec cat {} +; done | sort -u)
    [ -z "$pids" ] && break
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    [ -d "$fz" ] && echo THAWED >"$fz/freezer.state" 2>/dev/null || true
    sleep 0.1
  done
  [ -z "$pids" ] || log "processes left in cgroup $name: $pids"
  cgroups_of "$name" | while read -r d; do find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; done
  [ -z "$(cgroups_of "$name")" ] || log "cgroup $name not removed"
}

down() {
  local n cg
  for cg in $(for h in /sys/fs/cgroup/*/; do ls -d "$h$CGROUP_PREFIX"* 2>/dev/null; done | xargs -rn1 basename | sort -u); do
    kill_cgroup "$cg"
  done
  for n in $(ip netns list | awk -v p="$NETNS_PREFIX" 'index($1, p) == 1 {print $1}'); do
    ip netns del "$n"
  done
  if [ -L /usr/local/bin/kubectl ] && [[ $(readlink /usr/local/bin/kubectl) == */rampart/cluster/* ]]; then
    rm -f /usr/local/bin/kubectl
  fi
  rm -rf "$S" "$C/env" "$C/node.started" "$C/node.pid" "$C/pki" "$C"/*.kubeconfig "$C/kubeconfig" "$C/deploy"
  local hc
  hc=$(hostcheck_bin)
  if [ -n "$hc" ] && [ -f "$C/hostcheck.before" ]; then
    "$hc" diff "$C/hostcheck.before" || die "the root network namespace changed"
    rm -f "$C/hostcheck.before"
  fi
  log "down"
}

deploy_rampart() {
  mkdir -p "$C/deploy"
  local patch="- op: test
  path: /spec/template/spec/containers/0/args/0
  value: --dataplane=auto
- op: replace
  path: /spec/template/spec/containers/0/args/0
  value: --dataplane=$DATAPLANE"
  if [ "$DATAPLANE" = iptables ]; then
    # kube-proxy translates Services; rampart enforces policy on the translated traffic.
    patch+="
- op: add
  path: /spec/template/spec/containers/0/args/-
  value: --services=kube-proxy"
  else
    # No kube-proxy: the agent reaches the API server directly, as Cilium's k8sServiceHost.
    patch+="
- op: add
  path: /spec/template/spec/containers/0/env/-
  value: {name: KUBERNETES_SERVICE_HOST, value: \"$NODE_IP\"}
- op: add
  path: /spec/template/spec/containers/0/env/-
  value: {name: KUBERNETES_SERVICE_PORT, value: \"6443\"}
- op: add
  path: /spec/template/spec/containers/0/args/-
  value: --cgroup=/sys/fs/cgroup/unified/$CGROUP"
  fi
  cat >"$C/deploy/kustomization.yaml" <<EOF
# Written by scripts/cluster.sh: deploy/ with this cluster's dataplane.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- ../../deploy
patches:
- target: {kind: DaemonSet, name: rampart}
  patch: |-
$(sed 's/^/    /' <<<"$patch")
EOF
  kubectl_node apply -k "$C/deploy" >/dev/null
  kubectl_node -n rampart-system rollout status ds/rampart --timeout=180s >/dev/null ||
    die "rampart did not become ready: scripts/cluster.sh kubectl -n rampart-system logs ds/rampart"
}

up() {
  DATAPLANE=${1:-iptables}
  case $DATAPLANE in iptables | ebpf) ;; *) die "DATAPLANE must be iptables or ebpf, not $DATAPLANE" ;; esac
  [ "$(id -u)" -eq 0 ] || die "make cluster needs root"
  local t0=$SECONDS hc
  down 2>/dev/null || true
  mkdir -p "$C"
  hc=$(hostcheck_bin)
  [ -n "$hc" ] && "$hc" save "$C/hostcheck.before"
  BIN=$("$here/scripts/cluster-build.sh")
  IMAGES=$("$here/scripts/cluster-images.sh" "$BIN")
  (cd "$here" && scripts/image.sh "$GO" >/dev/null)
  local id
  id=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
  NETNS=$NETNS_PREFIX$id
  CGROUP=$CGROUP_PREFIX$id
  cat >"$C/env" <<EOF
NETNS=$NETNS
KUBECONFIG=$C/kubeconfig
DATAPLANE=$DATAPLANE
CGROUP=$CGROUP
BIN=$BIN
IMAGES=$IMAGES
NODE_NAME=$NODE_NAME
EOF
  pki
  configs
  make_cgroups
  ip netns add "$NETNS"
  [ -e /usr/local/bin/kubectl ] || ln -s "$BIN/kubectl" /usr/local/bin/kubectl
  setsid nsenter --net="/run/netns/$NETNS" -- unshare --mount --propagation private -- "$0" node \
    >"$C/node.log" 2>&1 </dev/null &
  local node=$!
  disown "$node" # it outlives this script; down ends it
  echo "$node" >"$C/node.pid"
  local i=0
  while [ ! -f "$C/node.started" ] && ((i++ < 300)); do
    kill -0 "$node" 2>/dev/null || die "the node failed: $C/node.log: $(tail -3 "$C/node.log")"
    sleep 1
  done
  [ -f "$C/node.started" ] || die "the node did not start: $C/node.log"
  retry 180 kubectl_node wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s ||
    die "node $NODE_NAME not Ready: $S/log/kubelet.log"
  deploy_rampart
  sed "s/DNS_SERVICE_IP/$DNS_SERVICE_IP/" "$here/test/coredns/coredns.yaml" | kubectl_node apply -f - >/dev/null
  kubectl_node -n kube-system rollout status deployment/coredns --timeout=180s >/dev/null ||
    die "CoreDNS did not become ready: scripts/cluster.sh kubectl -n kube-system logs deployment/coredns"
  if [ -n "$hc" ]; then "$hc" diff "$C/hostcheck.before" || die "the root network namespace changed"; fi
  log "up in $((SECONDS - t0))s: DATAPLANE=$DATAPLANE NETNS=$NETNS KUBECONFIG=$C/kubeconfig (. $C/env)"
}

e2e() {
  load_env
  mkdir -p "$C/e2e"
  local t0=$SECONDS rc=0
  in_node "$BIN/e2e-netpol.test" --kubeconfig "$C/kubeconfig" --provider local --report-dir "$C/e2e" \
    --ginkgo.focus "${E2E_FOCUS:-\[sig-network\] Netpol}" --ginkgo.skip '\[Feature:SCTPConnectivity\]' \
    --ginkgo.junit-report "$C/e2e/junit.xml" --ginkgo.timeout 3h "$@" >"$C/e2e/e2e.log" 2>&1 || rc=$?
  grep -E '^(Ran|PASS|FAIL|SUCCESS)|Passed.*Failed' "$C/e2e/e2e.log" | tail -5 >&2 || true
  log "e2e ($DATAPLANE) finished in $((SECONDS - t0))s, exit $rc; log and JUnit report in $C/e2e/"
  return $rc
}

# cnp_conformance: the upstream ClusterNetworkPolicy conformance suite (network-policy-api's
# conformance/, test/cnpconformance: SCTP containers and probes left out, as this kernel has no
# SCTP sockets), standard profile plus named ports and node peers, against the running cluster.
# Its test binary is cached by its inputs. Report in .cluster/cnp-conformance/.
cnp_conformance() {
  load_env
  local mod=$here/test/cnpconformance t0=$SECONDS rc=0
  local key
  key=$(cat "$mod/go.mod" "$mod/go.sum" "$mod"/*.go "$mod"/gen/*.go | sha256sum | cut -c1-12)
  local bin=${RAMPART_CACHE:-$HOME/.cache/rampart}/cluster/cnp-conformance-$key
  if [ ! -x "$bin/cnp-conformance.test" ]; then
    log "building the ClusterNetworkPolicy conformance suite"
    mkdir -p "$bin.tmp"
    (cd "$mod" && CGO_ENABLED=0 "$GO" run ./gen >&2 && CGO_ENABLED=0 "$GO" test -c -trimpath -o "$bin.tmp/cnp-conformance.test" .) ||
      die "could not build the conformance suite"
    mv "$bin.tmp" "$bin"
  fi
  mkdir -p "$C/cnp-conformance"
  # A run killed midway leaves its namespaces; the suite would apply into terminating ones.
  kubectl_node delete namespace --ignore-not-found --wait=true --timeout=180s \
    network-policy-conformance-{gryffindor,slytherin,hufflepuff,ravenclaw,forbidden-forrest} >/dev/null
  # The suite runs kubectl-like execs and reads the kubeconfig from $KUBECONFIG.
  in_node env KUBECONFIG="$C/kubeconfig" "$bin/cnp-conformance.test" -test.run TestConformance -test.v -test.timeout 60m \
    -supported-features ClusterNetworkPolicy,ClusterNetworkPolicyNamedPorts,ClusterNetworkPolicyEgressNodePeers \
    >"$C/cnp-conformance/conformance.log" 2>&1 || rc=$?
  # One line per upstream test; those skipped by name (SCTP only) still say PASS upstream.
  grep -E '^    --- (PASS|FAIL|SKIP): TestConformance/[^/]* ' "$C/cnp-conformance/conformance.log" | sed 's/^    //' >&2 || true
  grep -oE 'Skipping [A-Za-z]+' "$C/cnp-conformance/conformance.log" | sed 's/^/  (skipped by name) /' >&2 || true
  log "ClusterNetworkPolicy conformance ($DATAPLANE) finished in $((SECONDS - t0))s, exit $rc; log in $C/cnp-conformance/"
  return $rc
}

# check: a NetworkPolicy applied with kubectl changes what a real pod's connection attempts see
# within a second (and so does deleting it), timed from kubectl's return to the start of the
# first probe (agnhost connect through kubectl exec) that sees the new verdict.
check() {
  load_env
  local ns=rampart-check k=kubectl_node
  $k delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
  $k create namespace "$ns" >/dev/null
  $k -n "$ns" run server --image=registry.k8s.io/e2e-test-images/agnhost:2.53 --labels=app=server \
    --port=8080 -- netexec --http-port=8080 >/dev/null
  $k -n "$ns" run client --image=registry.k8s.io/e2e-test-images/agnhost:2.53 -- pause >/dev/null
  $k -n "$ns" wait --for=condition=Ready pod/server pod/client --timeout=120s >/dev/null
  local ip
  ip=$($k -n "$ns" get pod server -o jsonpath='{.status.podIP}')
  # probe: 0 connected, 1 timed out (dropped by policy), 2 anything else (exec failed, ...).
  probe() {
    local out
    out=$($k -n "$ns" exec client -- /agnhost connect "$ip:8080" --timeout=1s --protocol=tcp 2>&1) && return 0
    [[ $out == *TIMEOUT* ]] && return 1
    return 2
  }
  retry 30 probe || die "check: client cannot reach server before any policy"
  # until_sees WANT T0: probe until the outcome is WANT (0 connected, 1 blocked); print the
  # seconds from T0 to the start of that probe.
  until_sees() {
    local want=$1 t0=$2 t got i
    for ((i = 0; i < 100; i++)); do
      t=$(date +%s.%N)
      got=0
      probe || got=$?
      if [ "$got" = "$want" ]; then
        awk -v a="$t0" -v b="$t" 'BEGIN {d = b - a; if (d < 0) d = 0; printf "%.3f\n", d}'
        return 0
      fi
    done
    return 1
  }
  local t0 deny allow
  $k -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-server, namespace: $ns}
spec: {podSelector: {matchLabels: {app: server}}, policyTypes: [Ingress]}
EOF
  t0=$(date +%s.%N)
  deny=$(until_sees 1 "$t0") || die "check: the deny policy was never enforced"
  $k -n "$ns" delete networkpolicy deny-server >/dev/null
  t0=$(date +%s.%N)
  allow=$(until_sees 0 "$t0") || die "check: deleting the policy never let traffic through again"
  # The node's own sockets (a host-network pod's) reach a node port on 127.0.0.1, as kube-proxy's
  # localhost node ports; a pod's 127.0.0.1 is its own.
  local np
  $k -n "$ns" expose pod server --type=NodePort --port=8080 --name=web >/dev/null
  $k -n "$ns" run hostclient --image=registry.k8s.io/e2e-test-images/agnhost:2.53 \
    --overrides='{"apiVersion": "v1", "spec": {"hostNetwork": true}}' -- pause >/dev/null
  $k -n "$ns" wait --for=condition=Ready pod/hostclient --timeout=120s >/dev/null
  np=$($k -n "$ns" get service web -o jsonpath='{.spec.ports[0].nodePort}')
  retry 30 $k -n "$ns" exec hostclient -- /agnhost connect "127.0.0.1:$np" --timeout=1s --protocol=tcp ||
    die "check: a host-network pod cannot reach node port $np on 127.0.0.1"
  if $k -n "$ns" exec client -- /agnhost connect "127.0.0.1:$np" --timeout=1s --protocol=tcp >/dev/null 2>&1; then
    die "check: a pod reached node port $np on its own 127.0.0.1"
  fi
  $k delete namespace "$ns" --wait=false >/dev/null
  log "check ($DATAPLANE): policy in force ${deny}s after kubectl apply, lifted ${allow}s after kubectl delete; node port on 127.0.0.1 served"
  awk -v a="$deny" -v b="$allow" 'BEGIN {exit !(a <= 1 && b <= 1)}' || die "check: slower than 1s"
}

# image: rebuild rampart's image, import it into the node's containerd, apply deploy/ again and
# restart the DaemonSet.
image() {
  load_env
  (cd "$here" && scripts/image.sh "$GO" >/dev/null)
  nsenter -t "$(cat "$C/node.pid")" -m -n -- ctr -n k8s.io images import "$here/bin/rampart-image.tar" >/dev/null
  kubectl_node apply -k "$C/deploy" >/dev/null # deploy/ may have changed too
  kubectl_node -n rampart-system rollout restart ds/rampart >/dev/null
  kubectl_node -n rampart-system rollout status ds/rampart --timeout=180s
}

# The smoke check's upstream tests: default deny, namespace and pod selectors across
# namespaces, named ports, a UDP-only policy against TCP, and isolation by a policy naming SCTP.
SMOKE_FOCUS='\[sig-network\] Netpol NetworkPolicy between server and client should (support a .default-deny-ingress. policy|enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector|allow ingress access on one named port|not allow access by TCP when a policy specifies only UDP|properly isolate pods that are selected by a policy allowing SCTP)'

# smoke: on each dataplane, a cluster from scratch, the kubectl latency check and a handful of
# upstream tests, then down (also when a step fails). CI runs it after make test.
smoke() {
  local dp
  trap 'down >/dev/null 2>&1 || true' EXIT
  for dp in iptables ebpf; do
    up "$dp"
    check
    E2E_FOCUS=$SMOKE_FOCUS e2e
    down
  done
  trap - EXIT
}

# main is the whole command: the script may be edited while a long e2e run is in progress, and
# bash reads a script as it goes, so the last line holds the call and the exit.
main() {
  local cmd=${1:-}
  shift || true
  case $cmd in
  up) up "$@" ;;
  down) down ;;
  node) node ;;
  kubectl) load_env && kubectl_node "$@" ;;
  e2e) e2e "$@" ;;
  cnp-conformance) cnp_conformance ;;
  check) check ;;
  image) image ;;
  smoke) smoke ;;
  *) die "usage: $0 up [iptables|ebpf] | down | kubectl ARGS... | e2e [ARGS...] | cnp-conformance | check | image | smoke" ;;
  esac
}

main "$@"; exit
