#!/usr/bin/env bash
# Lints what CI runs: the workflows in .github/workflows with actionlint, at
# the version tools/go.sum pins (it checks their run: scripts with ShellCheck),
# and the repository's own shell scripts with ShellCheck. Without ShellCheck
# actionlint silently skips the run: scripts, so its absence fails.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v shellcheck >/dev/null 2>&1; then
  echo "lint:ci needs shellcheck on PATH (Debian: apt-get install shellcheck; macOS: brew install shellcheck)" >&2
  exit 1
fi
go tool actionlint
shellcheck ../.ci/run ./*.sh ../fuzz/run.sh
