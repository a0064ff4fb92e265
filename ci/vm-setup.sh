#!/usr/bin/env bash
# Installs what scripts/vm-test needs: qemu (qemu-system-x86), a static
# busybox for the guest's first stage, cpio for its initramfs and kmod to
# index the guest kernels' modules; then fetches the Debian kernel packages
# named on the command line and unpacks them (not installs them: the host's
# /boot stays as it is) under $CKPT_VM_CACHE/k/RELEASE.
#
# KERNEL is 6.1 (Debian 12's default, linux-image-amd64) or 6.12 (Debian
# 12's newer kernel, linux-image-6.12-amd64); other names are left to
# vm-test (6.18 is the host's own kernel, when /boot has its image).
# Prints "KERNEL RELEASE" per kernel it has. Idempotent; no standard input.
set -euo pipefail

cache=${CKPT_VM_CACHE:-/var/cache/ckpt-vm}
export DEBIAN_FRONTEND=noninteractive
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
for pkg in qemu-system-x86 busybox-static cpio kmod xz-utils zstd; do
	have_pkg "$pkg" || missing+=("$pkg")
done
updated=
if ((${#missing[@]})); then
	[ "$(id -u)" = 0 ] || { echo "vm-setup: need root to install: ${missing[*]}" >&2; exit 1; }
	echo "vm-setup: installing ${missing[*]}" >&2
	apt-get update </dev/null >&2
	updated=1
	apt-get install -y --no-install-recommends "${missing[@]}" </dev/null >&2
fi

# The meta package's dependency names the current image package.
meta_for() {
	case "$1" in
	6.1) echo linux-image-amd64 ;;
	6.12) echo linux-image-6.12-amd64 ;;
	*) return 1 ;;
	esac
}

mkdir -p "$cache/debs" "$cache/k"
for kernel in "$@"; do
	meta=$(meta_for "$kernel") || continue
	pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
	if [ -z "$pkg" ] && [ -z "$updated" ]; then
		apt-get update </dev/null >&2
		updated=1
		pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
	fi
	if [ -z "$pkg" ]; then
		echo "vm-setup: $kernel: the registry offers no $meta" >&2
		continue
	fi
	release=${pkg#linux-image-}
	dir=$cache/k/$release
	if [ ! -e "$dir/.done" ]; then
		echo "vm-setup: $kernel: fetching $pkg" >&2
		rm -rf "$dir"
		mkdir -p "$dir"
		(cd "$cache/debs" && apt-get download "$pkg" </dev/null >&2)
		dpkg-deb -x "$cache/debs/${pkg}_"*.deb "$dir"
		depmod -b "$dir" "$release"
		rm -f "$cache/debs/${pkg}_"*.deb
		touch "$dir/.done"
	fi
	echo "$kernel $release"
done
