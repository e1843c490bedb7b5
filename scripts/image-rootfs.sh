#!/bin/bash
# Assembles a container image's root file system for one of our binaries, and nothing else:
#   /usr/local/bin/NAME                        the binary, stripped (the Swift runtime is linked in)
#   the shared libraries `ldd` names, at the paths it names (each a regular file, from Debian's packages)
#   /usr/share/doc/PACKAGE/copyright           the licence of each package a library came from
#   /etc/passwd, /etc/group                    one entry each: nonroot, 65532
#
# usage: scripts/image-rootfs.sh BINARY NAME ROOTFS
# Used by `make images` (scripts/make-image.sh) and by the Dockerfiles in deploy/images/, so both build the same files.
set -euo pipefail
binary=$1 name=$2 root=$3
[ -x "$binary" ] || { echo "image-rootfs: $binary is not an executable" >&2; exit 1; }
mkdir -p "$root"
install -D -m 0755 -s "$binary" "$root/usr/local/bin/$name"

# ldd prints "libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x…)" for each library and the loader's own path
# ("/lib64/ld-linux-x86-64.so.2 (0x…)"); the vDSO has no file.
libraries=$(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
if ldd "$binary" | grep -q "not found"; then
    echo "image-rootfs: $binary needs a library this machine does not have:" >&2
    ldd "$binary" | grep "not found" >&2
    exit 1
fi
packages=()
for library in $libraries; do
    real=$(readlink -f "$library")
    install -D -m 0755 "$real" "$root$library"
    # dpkg knows a file by the path its package ships it at: on a merged-/usr system that can be either.
    package=$(dpkg -S "$library" 2>/dev/null || dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null) || {
        echo "image-rootfs: no Debian package owns $library ($real); its licence cannot be included" >&2
        exit 1
    }
    packages+=("${package%%:*}")
done
for package in $(printf '%s\n' "${packages[@]}" | sort -u); do
    install -D -m 0644 "/usr/share/doc/$package/copyright" "$root/usr/share/doc/$package/copyright"
done

# The user the pod specs name (runAsUser 65532), so that tools inside and outside show a name for it.
install -d -m 0755 "$root/etc"
printf 'nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin\n' > "$root/etc/passwd"
printf 'nonroot:x:65532:\n' > "$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"
