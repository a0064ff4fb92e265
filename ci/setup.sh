#!/usr/bin/env bash
# Installs what building and running the suite needs on a fresh Debian 12
# machine: a C toolchain (build-essential: gcc, make, libc headers) for the
# zdtm programs and pkg-config; vim and tmux for the terminal tests
# (terminals); python3, whose http.server the `programs` test dumps and
# restores; postgresql (server, initdb and psql; it makes the postgres
# user) for the PostgreSQL trials of the same test; and, optionally, Debian's criu package for
# its `crit` tool, which the image-format compatibility test runs on ckpt's
# images (the test skips itself where crit is missing, so failing to
# install it only warns). Idempotent: installs only what is missing.
# Needs no standard input; installing needs root.
set -euo pipefail

echo "ci/setup.sh: checking build dependencies"

missing=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# vim and tmux: the real interactive sessions of the terminal tests;
# python3: the http.server the programs test dumps and restores;
# postgresql: the server the programs test dumps and restores;
# nftables: nft, through which --tcp-established blocks the dumped
# connections' packets (the network lock); busybox-static: the static
# busybox the programs test's container is made of.
for pkg in build-essential pkg-config vim tmux python3 postgresql nftables busybox-static; do
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
	apt_updated=1
	echo "+ apt-get install -y --no-install-recommends ${missing[*]}"
	apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
fi

# crit (CRIU's image tool, in Debian's criu package) for the test that
# checks CRIU's tools read ckpt's images. Optional: without it that test
# says it is skipping, so nothing here may fail the run.
if command -v crit >/dev/null 2>&1; then
	echo "  crit: installed"
elif [ "$(id -u)" != 0 ]; then
	echo "ci/setup.sh: warning: crit is missing and installing it needs root; the crit compatibility test will be skipped" >&2
else
	echo "  crit: missing, installing the criu package"
	export DEBIAN_FRONTEND=noninteractive
	apt_opts=(-o Acquire::Retries=1 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30)
	ok=1
	if [ -z "${apt_updated:-}" ]; then
		echo "+ apt-get update"
		timeout 300 apt-get "${apt_opts[@]}" update </dev/null || ok=0
	fi
	if ((ok)); then
		echo "+ apt-get install -y --no-install-recommends criu"
		timeout 600 apt-get "${apt_opts[@]}" install -y --no-install-recommends criu </dev/null || ok=0
	fi
	if ((ok)) && command -v crit >/dev/null 2>&1; then
		echo "  crit: $(crit -h 2>&1 | head -n 1 | cut -c1-60)"
	else
		echo "ci/setup.sh: warning: could not install the criu package (apt unreachable?); the crit compatibility test will be skipped" >&2
	fi
fi

# The reference CRIU 4.2 build beside the repository (../shared/reference,
# where this machine kind has it): the cross-restore test (ckpt's images
# restored by CRIU and CRIU's by ckpt) and scripts/bench* run it. Its
# runtime libraries come from Debian packages (its README); optional like
# crit: without them the cross test says it is skipping.
criu_ref="$(dirname "$0")/../../shared/reference/criu-4.2/criu"
if [ -x "$criu_ref" ] && ldd "$criu_ref" 2>/dev/null | grep -q "not found"; then
	if [ "$(id -u)" != 0 ]; then
		echo "ci/setup.sh: warning: the reference CRIU's libraries are missing and installing them needs root; the cross test will be skipped" >&2
	else
		libs=(libprotobuf-c1 libnl-3-200 libnet1 libbsd0 libgnutls30 libnftables1 libuuid1)
		echo "  reference CRIU: libraries missing, installing ${libs[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt_opts=(-o Acquire::Retries=1 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30)
		ok=1
		if [ -z "${apt_updated:-}" ]; then
			timeout 300 apt-get "${apt_opts[@]}" update </dev/null || ok=0
			apt_updated=1
		fi
		((ok)) && { timeout 600 apt-get "${apt_opts[@]}" install -y --no-install-recommends "${libs[@]}" </dev/null || ok=0; }
		if ((ok)) && ! ldd "$criu_ref" | grep -q "not found"; then
			echo "  reference CRIU: $("$criu_ref" --version 2>&1 | head -n 1)"
		else
			echo "ci/setup.sh: warning: could not install the reference CRIU's libraries; the cross test will be skipped" >&2
		fi
	fi
elif [ -x "$criu_ref" ]; then
	echo "  reference CRIU: $("$criu_ref" --version 2>&1 | head -n 1)"
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
