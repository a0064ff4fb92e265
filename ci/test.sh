#!/usr/bin/env bash
# What CI runs (.ci/run): setup, formatting, lints, then every test target:
# unit tests and the zdtm conformance suite (which needs root; as another
# user its cases are reported ignored); with CKPT_VM_MATRIX=1 also the
# suite on other kernels in VMs (scripts/vm-test). Every check runs even when an
# earlier one failed, so one run reports everything; the exit status is
# non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

# The toolchain lives in ~/.cargo/bin, which a non-login shell may not have.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
	export PATH="$HOME/.cargo/bin:$PATH"
fi

bash ci/setup.sh || exit 1
if [ "$(id -u)" != 0 ]; then
	echo "ci/test.sh: not root: the zdtm cases will be reported ignored" >&2
fi

failed=()
step() {
	echo
	echo "==> $*"
	local t0=$SECONDS
	if "$@"; then
		echo "==> ok ($((SECONDS - t0))s): $*"
	else
		echo "==> FAILED ($((SECONDS - t0))s): $*"
		failed+=("$*")
	fi
}

step cargo fmt --all -- --check
step cargo clippy --all-targets -- -D warnings
step cargo test --all-targets
# The kernel matrix (scripts/vm-test): the suite in emulated guests of
# Debian's 6.1 and 6.12 and this machine's kernel; long, so only on demand.
if [ "${CKPT_VM_MATRIX:-0}" = 1 ]; then
	step scripts/vm-test ${CKPT_VM_KERNELS:-6.1 6.12 6.18}
fi

echo
if ((${#failed[@]})); then
	printf 'ci/test.sh: failed: %s\n' "${failed[@]}"
	exit 1
fi
echo "ci/test.sh: all checks passed"
