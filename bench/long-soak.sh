#!/usr/bin/env bash
# bench/long-soak.sh: the long variant of the soak test (by hand, not in CI):
# hundreds of clients over both protocols verify every byte while a fifth of
# them misbehave; after each round descriptors must be back at baseline and
# memory flat. ROUNDS and SECS set the length (default 10 rounds of 60 s).
set -euo pipefail
cd "$(dirname "$0")/.."
export IOCOMP_SOAK_ROUNDS=${ROUNDS:-10} IOCOMP_SOAK_SECS=${SECS:-60}
exec cargo test --release -p iocomp-server --test server soak::soak_rounds -- --nocapture
