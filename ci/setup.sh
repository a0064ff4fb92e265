#!/usr/bin/env bash
# Installs what building and running the suite needs on a fresh Debian 12
# machine: a C toolchain (build-essential: gcc, make, libc headers) for the
# zdtm programs and pkg-config. Idempotent: installs only what is missing.
# Needs no standard input; installing needs root.
set -euo pipefail

echo "ci/setup.sh: checking build dependencies"

missing=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in build-essential pkg-config; do
	if have_pkg "$pkg"; then
		echo "  $pkg: installed"
	else
		echo "  $pkg: missing"
		missing+=("$pkg")
	fi
done

if ((${#missing[@]})); then
	if [ "$(id -u)" != 0 ]; then
		echo "ci/setup.sh: need root to install: ${missing[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	echo "+ apt-get update"
	apt-get update </dev/null
	echo "+ apt-get install -y --no-install-recommends ${missing[*]}"
	apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
fi

# The Rust toolchain comes with the machine; it cannot be downloaded here.
if ! command -v cargo >/dev/null 2>&1; then
	echo "ci/setup.sh: cargo is not on PATH (nor in ~/.cargo/bin)" >&2
	exit 1
fi
for sub in fmt clippy; do
	if ! cargo "$sub" --version >/dev/null 2>&1; then
		echo "ci/setup.sh: 'cargo $sub' is not installed (rustup component add rustfmt clippy)" >&2
		exit 1
	fi
done
echo "  $(cargo --version)"
echo "  $(cc --version | head -n 1)"
echo "ci/setup.sh: done"
