#!/usr/bin/env bash
# Negative compilation test: checks that misuse of the library fails to compile with one clear
# message. Usage (from the compile_fail_test macro in tools/compile_fail.bzl):
#   compile_fail_test.sh snippet.cc...
# Each snippet is a complete translation unit whose misuse sits under `#ifdef CONCURRY_MISUSE`,
# with these comment lines:
#   // EXPECT-ERROR: <extended regex>   the first "error:" line of the compiler must match it
#   // MAX-ERRORS: <n>                  at most n "error:" lines in all (default 1)
# The snippet is compiled twice with -fsyntax-only: without CONCURRY_MISUSE it must compile (so
# the failure below is the misuse, not a missing include), with it it must fail as declared.
set -uo pipefail

CXX="${CXX:-g++}"
root="${TEST_SRCDIR:-.}/${TEST_WORKSPACE:-concurry}"
flags=(-std=c++20 -fsyntax-only -I"$root" -I/usr/include/oneapi)
failures=0

for snippet in "$@"; do
  name="$(basename "$snippet")"
  expect="$(sed -nE 's|^// EXPECT-ERROR: (.*)$|\1|p' "$snippet" | head -n 1)"
  max_errors="$(sed -nE 's|^// MAX-ERRORS: ([0-9]+)$|\1|p' "$snippet" | head -n 1)"
  max_errors="${max_errors:-1}"
  if [[ -z "$expect" ]]; then
    echo "FAIL $name: no '// EXPECT-ERROR: <regex>' line"
    failures=$((failures + 1))
    continue
  fi
  if ! out="$("$CXX" "${flags[@]}" "$snippet" 2>&1)"; then
    echo "FAIL $name: does not compile without CONCURRY_MISUSE:"
    echo "$out" | head -n 30
    failures=$((failures + 1))
    continue
  fi
  if out="$("$CXX" "${flags[@]}" -DCONCURRY_MISUSE "$snippet" 2>&1)"; then
    echo "FAIL $name: compiles with CONCURRY_MISUSE (expected an error matching: $expect)"
    failures=$((failures + 1))
    continue
  fi
  errors="$(grep -E '(^|: )error: ' <<<"$out")"
  count="$(grep -c . <<<"$errors")"
  first="$(head -n 1 <<<"$errors")"
  if ! grep -qE -- "$expect" <<<"$first"; then
    echo "FAIL $name: the first error does not match '$expect':"
    echo "  $first"
    echo "---- full output (first 40 lines):"
    echo "$out" | head -n 40
    failures=$((failures + 1))
  elif ((count > max_errors)); then
    echo "FAIL $name: $count errors, at most $max_errors expected:"
    echo "$errors" | head -n 20
    failures=$((failures + 1))
  else
    echo "ok   $name: $count error(s), $(grep -c . <<<"$out") lines of output; first: ${first#*error: }"
  fi
done

if ((failures > 0)); then
  echo "$failures of $# snippets failed"
  exit 1
fi
echo "all $# snippets fail to compile as expected"
