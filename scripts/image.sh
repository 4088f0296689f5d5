#!/usr/bin/env bash
# Build the agent's OCI image tarball (bin/rampart-image.tar, tag localhost/rampart:dev) without
# Docker: a root filesystem of the rampart-agent binary (the entrypoint), the rampart CLI (for
# `kubectl exec ... rampart flows` and the like), plus iptables-nft, ipset and nsenter with their
# libraries from this machine's Debian packages, packed by scripts/mkimage (go-containerregistry).
set -euo pipefail
GO=${1:-go}
TAG=${2:-localhost/rampart:dev}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
# shellcheck source=rootfs.sh
. scripts/rootfs.sh
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$root/run" "$root/sys/fs/bpf"
CGO_ENABLED=0 "$GO" build -trimpath -o "$root/usr/local/bin/" ./cmd/rampart ./cmd/rampart-agent
# The programs the dataplanes run, resolved through Debian's alternatives to the nft backend.
rootfs_copy "$root" /usr/sbin/xtables-nft-multi /usr/sbin/ipset /usr/bin/nsenter
for n in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -sf xtables-nft-multi "$root/usr/sbin/$n"
done
# iptables' match and target extensions, loaded at run time.
xt=$(dirname "$(dpkg -S libxt_tcp.so | awk -F': ' '{print $2; exit}')")
[ -d "$xt" ] || { echo "iptables extensions not found" >&2; exit 1; }
mkdir -p "$root$xt" && cp -a "$xt"/. "$root$xt"/
rootfs_libs "$root" "$xt"/*.so
cp /etc/protocols /etc/services "$root/etc/" 2>/dev/null || true
echo 'root:x:0:0:root:/root:/sbin/nologin' > "$root/etc/passwd"
GO=$GO rootfs_pack "$root" bin/rampart-image.tar "$TAG" /usr/local/bin/rampart-agent ""
echo "bin/rampart-image.tar ($TAG): $(du -h bin/rampart-image.tar | cut -f1)"
