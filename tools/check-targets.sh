#!/usr/bin/env bash
# Compiles and lints the Rust workspace, tests included, for every target in
# package.json's napi.targets, so the cfg branches for macOS, FreeBSD, musl and
# arm64 meet a compiler before the release matrix builds them. Needs rustup;
# installs the standard library of any target that is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t targets < <(node -p "require('./package.json').napi.targets.join('\n')")
installed=$(rustup target list --installed)
for target in "${targets[@]}"; do
  grep -qx "$target" <<<"$installed" || rustup target add "$target"
  echo "== $target"
  # musl targets link the C runtime statically by default, which rules out the
  # binding's cdylib; napi build turns it off the same way.
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=-crt-static" \
    cargo clippy --workspace --all-targets --features fdpass/fuzzing --target "$target" -- -D warnings
done
