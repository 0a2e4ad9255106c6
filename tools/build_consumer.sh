#!/usr/bin/env bash
# Builds and runs examples/consumer: a separate Bazel workspace that depends on
# concurry through local_repository + concurry_deps(), as another project would.
#   tools/build_consumer.sh [bazel build options, e.g. --config=ci]
# BAZEL_STARTUP_OPTS (optional) is passed to every bazel call, as in .ci/run.
# That workspace has its own Bazel server; it is shut down on exit.
set -euo pipefail
cd "$(dirname "$0")/../examples/consumer"
# Same startup options for every call (else the server restarts);
# --max_idle_secs: the server also exits by itself if this script is killed.
BZ=(bazel ${BAZEL_STARTUP_OPTS:-} --max_idle_secs=300)
trap '"${BZ[@]}" shutdown' EXIT

"${BZ[@]}" build "$@" //...
"${BZ[@]}" test "$@" //...
"${BZ[@]}" run "$@" //:main
"${BZ[@]}" run "$@" //:thread_worker
# The benchmark report from this workspace (bazel run @concurry//benchmarks:report): loading and
# analysis only (macros, the optimized-binaries transition, the Python toolchain); building it
# would compile every benchmark again.
"${BZ[@]}" build --nobuild "$@" @concurry//benchmarks:report

# A binary that depends on the worker core and one backend pulls in only that backend: no oneTBB
# (//workers/tbb) and no gRPC (the remote backend, later).
deps="$("${BZ[@]}" query --curses=no --color=no 'deps(//:thread_worker)')"  # set -e: fails here
heavy="$(grep -E '^@(onetbb|com_github_grpc_grpc|com_google_protobuf)//' <<<"$deps" || true)"
if [[ -n "$heavy" ]]; then
  echo "//:thread_worker depends on the core and the thread backend only, yet pulls in:" >&2
  echo "$heavy" >&2
  exit 1
fi
echo "deps(//:thread_worker): no @onetbb, no gRPC, no protobuf"
