#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need that
# such a machine may lack, then runs every test of the workspace on both
# engine backends, without stopping at the first failing test binary.
#
#   ./test.sh            # as root, or as a user with sudo (for apt-get)
#
# What it installs, only where missing (Debian's apt and the npm registry):
#   curl                 the HTTP integration tests drive the server with curl
#   chromium, node, npm  the browser tests (crates/iocomp-cli/tests/cli/browser.rs)
#                        drive Debian's Chromium with playwright-core
#   node_modules         `npm ci` in crates/iocomp-cli/tests/browser
#   tmux                 the terminal test of `iocomp get`'s progress bar
# A fresh machine of this kind already has the Rust toolchain, gcc and python3.
#
# The backends: the first pass forces io_uring where the kernel allows it
# (else the engine's default, epoll, and says so), the second forces epoll
# for the crates that run the engine (iocomp, iocomp-server, iocomp-cli).
# .ci/run calls this same script.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null; then
    SUDO=(sudo)
else
    SUDO=()
    echo "test.sh: not root and no sudo: missing packages cannot be installed" >&2
fi
APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)

updated=
# A policy-rc.d this script put there goes away however the script ends.
made_policy=
remove_policy() {
    if [ -n "$made_policy" ]; then
        "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d || true
        made_policy=
    fi
}
trap remove_policy EXIT
trap 'remove_policy; exit 130' INT
trap 'remove_policy; exit 143' TERM
apt_install() {
    if [ -z "$updated" ]; then
        "${APT[@]}" update -qq
        updated=1
    fi
    # --no-install-recommends keeps out udev, upower and friends; a
    # policy-rc.d that answers 101 stops any package from starting a service.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    "${APT[@]}" install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
    remove_policy
    return $rc
}

need=()
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v tmux >/dev/null || need+=(tmux)
command -v chromium >/dev/null || need+=(chromium)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing: ${need[*]}"
    apt_install "${need[@]}"
fi
echo "== npm ci (browser tests)"
npm ci --prefix crates/iocomp-cli/tests/browser --no-audit --no-fund --loglevel=error

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Through cargo: the binary is wherever CARGO_TARGET_DIR (or a config) puts it.
version=$(cargo run -q -p iocomp-cli --bin iocomp -- --version)
first=uring
if ! grep -q '^backend: uring$' <<<"$version"; then
    first=
    echo "test.sh: io_uring is not available here ($(tail -1 <<<"$version")):"
    echo "         the first pass runs on the engine's default backend"
fi

failed=()
echo "== test (IOCOMP_BACKEND=${first:-default})"
if [ -n "$first" ]; then
    IOCOMP_BACKEND=uring cargo test --workspace --no-fail-fast || failed+=("${first}")
else
    cargo test --workspace --no-fail-fast || failed+=(default)
fi
echo "== test (IOCOMP_BACKEND=epoll)"
IOCOMP_BACKEND=epoll cargo test -p iocomp -p iocomp-server -p iocomp-cli --no-fail-fast \
    || failed+=(epoll)

if [ ${#failed[@]} -gt 0 ]; then
    echo "test.sh: FAILED on: ${failed[*]}" >&2
    exit 1
fi
echo "test.sh: all tests passed on both backends"
