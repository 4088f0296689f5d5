# Sourced by the image scripts: copy this machine's programs into an image's root filesystem.

# rootfs_copy ROOT PROGRAM...: each program, and the shared libraries it loads (the loader
# included), at the same paths under ROOT.
rootfs_copy() {
  local root=$1 p
  shift
  for p in "$@"; do
    install -D "$p" "$root$p"
  done
  rootfs_libs "$root" "$@"
}

# rootfs_libs ROOT FILE...: the shared libraries each program or library loads, at the same
# paths under ROOT.
rootfs_libs() {
  local root=$1 p lib
  shift
  for p in "$@"; do
    ldd "$p" 2>/dev/null | awk '/=> \//{print $3} /^\t\/lib/{print $1}' | while read -r lib; do
      install -D "$(readlink -f "$lib")" "$root$lib"
    done
  done
}

# rootfs_pack ROOT OUT TAG ENTRYPOINT CMD: ROOT as a one-layer image tarball OUT named TAG
# (entrypoint and command: words separated by commas).
rootfs_pack() {
  local root=$1 out=$2 tag=$3 entry=$4 cmd=$5 here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  mkdir -p "$(dirname "$out")"
  tar -C "$root" --owner=0 --group=0 --numeric-owner -cf "$out.layer.tar" .
  (cd "$here" && "${GO:-go}" run ./scripts/mkimage -o "$out" -t "$tag" -layer "$out.layer.tar" -entrypoint "$entry" -cmd "$cmd")
  rm -f "$out.layer.tar"
}
