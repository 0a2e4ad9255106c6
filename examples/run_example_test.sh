#!/usr/bin/env bash
# Runs an example program and checks that it exits 0 and prints the expected line.
# Usage: run_example_test.sh <program> <expected line>
set -euo pipefail
out="$("$1")"
printf '%s\n' "$out"
if ! grep -qxF -- "$2" <<<"$out"; then
  echo "FAIL: expected a line '$2' in the output of $1" >&2
  exit 1
fi
