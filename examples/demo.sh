#!/usr/bin/env bash
# npm run demo: the whole pipeline on the built-in gophermoon example, from a fresh clone.
# Sets the host up, fetches the verified Lua source, builds, boots the pruned image read-only
# like the board does, and shows what it served and what was produced.
set -euo pipefail
cd "$(dirname "$0")/.."

# dist/cli.js is self-contained (esbuild bundle): the demo needs no npm install.
lhc() { node dist/cli.js "$@"; }

config=examples/gophermoon/lhc.yml
out="${LHC_DEMO_OUT:-out/gophermoon}"

if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
  echo "npm run demo needs root or passwordless sudo (it installs packages, mounts images and runs containers)" >&2
  exit 1
fi

echo "==> host setup"
lhc setup

echo "==> inputs"
if ! lhc fetch "$config"; then
  # Machines that cannot reach the upstream URL still have Debian's lua5.4 source package, which
  # carries the byte-identical upstream tarball; the store accepts it only if its sha256 matches.
  echo "upstream unreachable: taking lua-5.4.4.tar.gz from Debian's lua5.4 source package"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get source --download-only -qq lua5.4 >/dev/null)
  lhc store add "$tmp"/lua5.4_5.4.4.orig.tar.gz
  lhc fetch "$config"
fi

echo "==> build (lua, root, trace, prune, pack, verify)"
lhc build "$config" --out "$out"

echo
echo "==> the root menu, fetched over TCP from the booted read-only image"
log="$(mktemp)"
if ! lhc verify "$config" --image "$out/gophermoon.squashfs" --data "$out/gophermoon-data.tar.gz" --show 2>"$log"; then
  cat "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"

echo
echo "==> artifacts in $out"
(cd "$out" && find . -type f | sort | while read -r f; do
  printf '%10d  %s  %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-64)" "${f#./}"
done)
echo
echo "Flash $out/gophermoon.squashfs to the board and install $out/deploy (see README: Deploying to the board)."
