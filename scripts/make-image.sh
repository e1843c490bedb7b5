#!/bin/bash
# Builds one OCI image archive from one of our binaries, with no base image and nothing pulled: the files of
# scripts/image-rootfs.sh in one layer, run as 65532:65532. The archive is what `skopeo copy oci-archive:…`,
# `podman load` and `ktlab image load` take. An archive newer than its binary and these scripts is kept.
#
# usage: scripts/make-image.sh NAME TAG BINARY OUTDIR PORT [DEFAULT-ARGUMENT ...]
# prints: NAME:TAG  sha256:<manifest digest>  <compressed size> compressed, <unpacked size> unpacked  OUTDIR/NAME.tar
set -euo pipefail
name=$1 tag=$2 binary=$3 out=$4 port=$5
shift 5
here=$(cd "$(dirname "$0")" && pwd)
archive="$out/$name.tar"
mkdir -p "$out"

report() {
    local index manifest digest config layers compressed unpacked
    index=$(tar -xOf "$archive" index.json)
    digest=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["digest"])' <<<"$index")
    manifest=$(tar -xOf "$archive" "blobs/sha256/${digest#sha256:}")
    # Compressed: what a registry stores and a node pulls (config, manifest and layers).
    compressed=$(python3 -c '
import json,sys
m=json.loads(sys.argv[1]); print(m["config"]["size"]+sum(l["size"] for l in m["layers"])+len(sys.argv[1]))' "$manifest")
    unpacked=$(du -sb --apparent-size "$1" 2>/dev/null | cut -f1 || true)
    python3 -c '
import sys
name, digest, compressed, unpacked, archive = sys.argv[1:]
size = "%.1f MB compressed" % (int(compressed) / 1e6)
if unpacked: size += ", %.1f MB unpacked" % (int(unpacked) / 1e6)
print(f"{name}  {digest}  {size}  {archive}")' "$name:$tag" "$digest" "$compressed" "$unpacked" "$archive"
}

if [ -f "$archive" ] && [ "$archive" -nt "$binary" ] && [ "$archive" -nt "$here/make-image.sh" ] \
    && [ "$archive" -nt "$here/image-rootfs.sh" ]; then
    report ""
    exit 0
fi

# The work directory holds no mount (umoci unpacks and packs plain files), so removing it is safe.
work=$(mktemp -d "$out/.work-$name.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
umoci init --layout "$work/layout"
umoci new --image "$work/layout:$name:$tag"
umoci unpack --image "$work/layout:$name:$tag" "$work/bundle" >/dev/null
"$here/image-rootfs.sh" "$binary" "$name" "$work/bundle/rootfs"
umoci repack --image "$work/layout:$name:$tag" "$work/bundle"
config=(--config.user 65532:65532 --config.entrypoint "/usr/local/bin/$name" --config.workingdir /
    --config.exposedports "$port/tcp" --os linux --architecture amd64 --author "ktconnect make images"
    --config.label "org.opencontainers.image.title=$name" --config.label "org.opencontainers.image.version=$tag")
for argument in "$@"; do config+=(--config.cmd "$argument"); done
umoci config --image "$work/layout:$name:$tag" "${config[@]}"
umoci gc --layout "$work/layout"
# Written beside and renamed, so that an interrupted build never leaves a half archive that looks new.
tar -C "$work/layout" --sort=name --owner=0 --group=0 --numeric-owner -cf "$work/$name.tar" oci-layout index.json blobs
mv -f "$work/$name.tar" "$archive"
report "$work/bundle/rootfs"
