#!/usr/bin/env bash
# One-command setup for a fresh Debian 12 (bookworm) x86_64 machine:
#   tools/setup.sh          (as root the first time: it installs packages with apt-get)
# Idempotent. A re-run on a set-up machine takes about a second: apt-get is skipped when every
# package is installed, and the tsan sources are re-fetched only when the installed version changes.
# Needs only the Debian archive (no other network access).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

# 1. Packages -------------------------------------------------------------------------------------
PACKAGES=(
  # Bazel 4.2.3 and the rule sets it would otherwise download.
  bazel-bootstrap bazel-rules-java bazel-platforms bazel-skylib
  # Compiler, sanitizer runtimes (asan/tsan/ubsan), tools.
  g++ libasan8 libtsan2 libubsan1 pkg-config python3 dpkg-dev clang-format
  # Libraries, exposed under their upstream Bazel names by //:deps.bzl.
  libabsl-dev libgtest-dev libgmock-dev googletest libbenchmark-dev libtbb-dev
  libgoogle-glog-dev libgflags-dev libcereal-dev libasio-dev libcaf-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  # Redis: the server the Redis LimitSet tests and benchmarks start (redis-server, redis-benchmark)
  # and the client library behind //limits/redis (hiredis). On a host with systemd, installing
  # redis-server also starts a system Redis on 6379, RedisOptions' default port: the tests start
  # their own servers on free ports, but code that forgets .port talks to that one. Stop it with
  # `systemctl disable --now redis-server` where it is not wanted.
  redis-server redis-tools libhiredis-dev
  # The benchmark report (//benchmarks:report): compare.py's U test, charts.
  libbenchmark-tools python3-scipy python3-matplotlib
)
installed="$(dpkg-query -W -f='${Package}\t${Status}\n' "${PACKAGES[@]}" 2>/dev/null |
             awk -F'\t' '$2 == "install ok installed" {print $1}' || true)"
missing=()
for p in "${PACKAGES[@]}"; do
  grep -qxF -- "$p" <<<"$installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup.sh: installing ${#missing[@]} missing package(s): ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
else
  echo "setup.sh: all ${#PACKAGES[@]} packages already installed"
fi

# 2. Sources for --config=tsan. The Debian .so files are not TSan-instrumented, so synchronization
#    inside them (absl::Mutex, TBB's scheduler) is invisible to TSan and gives false races. Abseil
#    and oneTBB ship upstream Bazel BUILD files, so the exact Debian source (same version + Debian
#    patches) is built from source under tsan, plus our own backports in third_party/patches/.
#    A private apt state dir with deb-src entries derived from this machine's own apt sources is
#    used, so /etc/apt is left alone.
fetch_debian_source() {  # <source pkg> <installed binary pkg> <dest dir> [patch...]
  local src="$1" bin="$2" dest="$3" ver stamp tmp f
  shift 3
  ver="$(dpkg-query -W -f='${Version}' "$bin")"
  stamp="$ver"
  for f in "$@"; do stamp+=" $(basename "$f"):$(sha256sum <"$f" | cut -c1-16)"; done
  [[ "$(cat "$dest/.debian-version" 2>/dev/null)" == "$stamp" ]] && return 0
  echo "setup.sh: fetching the Debian source of $src $ver into $dest"
  tmp="$(mktemp -d)"
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
  # deb-src entries derived from this machine's apt sources (deb822 and one-line formats).
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] && { sed 's/^Types: deb$/Types: deb-src/' "$f"; echo; }
  done > "$tmp/src.sources"
  grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed 's/^deb /deb-src /' > "$tmp/src.list" || true
  local apto=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$tmp"
              -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache"
              -o "APT::Sandbox::User=root")
  apt-get "${apto[@]}" update -q
  (cd "$tmp" && apt-get "${apto[@]}" source --download-only "$src=$ver")
  dpkg-source --no-check --no-copy -x "$tmp/${src}_"*.dsc "$tmp/tree"  # applies debian/patches
  for f in "$@"; do patch -d "$tmp/tree" -p1 --forward --quiet <"$f"; done
  echo "$stamp" > "$tmp/tree/.debian-version"
  # Swap in the new tree only once it is complete.
  rm -rf "$dest.old"
  [[ ! -e "$dest" ]] || mv "$dest" "$dest.old"
  mv "$tmp/tree" "$dest"
  rm -rf "$dest.old" "$tmp"
}
fetch_debian_source abseil libabsl-dev third_party/abseil-cpp \
  third_party/patches/abseil-tsan-mutex-post.patch
fetch_debian_source onetbb libtbb-dev third_party/onetbb-src \
  third_party/patches/onetbb-tsan-malloc.patch

# 3. Machine-local bazelrc (absolute paths only: %workspace% is not expanded inside
#    --override_repository or --test_env values). Rewritten only when it changes.
local_rc="build:tsan --override_repository=com_google_absl=$PWD/third_party/abseil-cpp
build:tsan --override_repository=onetbb=$PWD/third_party/onetbb-src
build:tsan --test_env=TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tools/tsan_suppressions.txt"
if [[ "$(cat .bazelrc.local 2>/dev/null)" != "$local_rc" ]]; then
  printf '%s\n' "$local_rc" > .bazelrc.local
  echo "setup.sh: wrote .bazelrc.local"
fi

echo "setup.sh: done. Next: bazel test //..."
