#!/usr/bin/env bash
# actionlint over .github/workflows, at the version tools/go.sum pins. Without
# ShellCheck, actionlint silently skips the run: scripts, so its absence fails.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v shellcheck >/dev/null 2>&1; then
  echo "lint:workflows needs shellcheck on PATH (Debian: apt-get install shellcheck; macOS: brew install shellcheck)" >&2
  exit 1
fi
go tool actionlint
