#!/usr/bin/env bash
# What CI runs (.ci/run): setup, formatting, lints, then every test target:
# unit tests and the zdtm conformance suite (which needs root; as another
# user its cases are reported ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

# The toolchain lives in ~/.cargo/bin, which a non-login shell may not have.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
	export PATH="$HOME/.cargo/bin:$PATH"
fi

step() {
	echo
	echo "==> $*"
	"$@"
}

step bash ci/setup.sh
if [ "$(id -u)" != 0 ]; then
	echo "ci/test.sh: not root: the zdtm cases will be reported ignored" >&2
fi
step cargo fmt --all -- --check
step cargo clippy --all-targets -- -D warnings
step cargo test --all-targets
