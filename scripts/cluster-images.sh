#!/bin/bash
# Builds the test cluster's images without a registry, into a cache keyed by their inputs, and
# prints the directory holding the tarballs (docker-save format, for `ctr images import`):
#   pause.tar    registry.k8s.io/pause:3.10, a static build of the module's build/pause
#   agnhost.tar  registry.k8s.io/e2e-test-images/agnhost:2.53, the agnhost binary built by
#                scripts/cluster-build.sh, with the shell, network and file tools upstream's
#                (Alpine) image carries (bash, sh, curl, nc, nslookup, dig, ip, ss, coreutils,
#                grep, sed, ps) from this machine's packages
#   coredns.tar  registry.k8s.io/coredns/coredns:v1.12.3, test/coredns's build
# The names are upstream's, so e2e tests need no image override.
#   scripts/cluster-images.sh BINDIR
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bindir=$1
# shellcheck source=rootfs.sh
. "$here/scripts/rootfs.sh"
mod=$(cd "$here/test/cluster" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
tools=(/bin/bash /bin/dash /usr/bin/curl /bin/nc.openbsd /usr/bin/nslookup /usr/bin/dig /sbin/ip /bin/ss
  /bin/cat /bin/ls /bin/sleep /bin/echo /bin/hostname /bin/mkdir /bin/rm /bin/cp /bin/mv /bin/ln /bin/chmod
  /bin/touch /bin/date /bin/grep /bin/sed /bin/uname /bin/ps /usr/bin/env /usr/bin/timeout /usr/bin/head
  /usr/bin/tail /usr/bin/wc /usr/bin/sort /usr/bin/cut /usr/bin/tr /usr/bin/id /usr/bin/test /usr/bin/seq)
key=$(cat "$0" "$here/scripts/rootfs.sh" "$bindir/agnhost" "$bindir/coredns" "$mod/build/pause/linux/pause.c" "${tools[@]}" | sha256sum | cut -c1-12)
out=${RAMPART_CACHE:-$HOME/.cache/rampart}/cluster/images-$key
if [ -s "$out/agnhost.tar" ]; then echo "$out"; exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/out"

mkdir -p "$tmp/pause"
gcc -Os -static -DVERSION=v3.10 -o "$tmp/pause/pause" "$mod/build/pause/linux/pause.c"
strip "$tmp/pause/pause"
rootfs_pack "$tmp/pause" "$tmp/out/pause.tar" registry.k8s.io/pause:3.10 /pause "" >&2

a=$tmp/agnhost
mkdir -p "$a/tmp" "$a/etc" "$a/uploads" "$a/usr/local/bin"
rootfs_copy "$a" "${tools[@]}"
ln -sf dash "$a/bin/sh"
ln -sf nc.openbsd "$a/bin/nc"
cp "$bindir/agnhost" "$a/agnhost"
ln -s agnhost "$a/agnhost-2"
cp "$mod/test/images/agnhost/porter/localhost.crt" "$mod/test/images/agnhost/porter/localhost.key" "$a/"
printf 'root:x:0:0:root:/root:/bin/sh\nuser-defined-in-image:x:1000:1000::/home:/bin/sh\n' > "$a/etc/passwd"
printf 'root:x:0:\ngroup-defined-in-image:x:50000:user-defined-in-image\n' > "$a/etc/group"
cp /etc/protocols /etc/services "$a/etc/"
chmod 1777 "$a/tmp"
rootfs_pack "$a" "$tmp/out/agnhost.tar" registry.k8s.io/e2e-test-images/agnhost:2.53 /agnhost pause >&2

mkdir -p "$tmp/coredns/etc"
cp "$bindir/coredns" "$tmp/coredns/coredns"
echo 'nonroot:x:65532:65532::/:/sbin/nologin' >"$tmp/coredns/etc/passwd"
rootfs_pack "$tmp/coredns" "$tmp/out/coredns.tar" registry.k8s.io/coredns/coredns:v1.12.3 /coredns "" >&2

mkdir -p "$(dirname "$out")"
mv "$tmp/out" "$out"
echo "$out"
