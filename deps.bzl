"""concurry_deps(): declares every repository concurry needs (the grpc_deps() pattern).

In a WORKSPACE, after declaring concurry itself:

    local_repository(name = "concurry", path = "/path/to/concurry-cpp")
    load("@concurry//:deps.bzl", "concurry_deps")
    concurry_deps()

Each repository is declared only if the WORKSPACE has not declared it already,
so declare your own com_google_absl, onetbb, ... BEFORE calling concurry_deps()
to override it. concurry's own WORKSPACE calls this same macro.

The C++ libraries are Debian 12 system packages (headers in /usr/include), put
behind their upstream repository names and labels by repository rules
(//third_party:repositories.bzl): @com_google_absl//absl/synchronization,
@com_google_googletest//:gtest, @onetbb//:tbb, ... Repositories are fetched
lazily, so a build only touches the libraries its targets depend on.
"""

load("//third_party:repositories.bzl", "system_absl_repository", "system_repository")

def _system(name, packages, required, files = {}, symlinks = {}, build_file = True):
    """Declares @name over a system library, with BUILD template third_party/system/<name>.BUILD."""
    if native.existing_rule(name):
        return
    system_repository(
        name = name,
        build_file = Label("//third_party:system/%s.BUILD" % name) if build_file else None,
        files = {Label("//third_party:system/" + src): dest for src, dest in files.items()},
        symlinks = symlinks,
        required = required,
        packages = packages,
    )

def _local(name, path):
    if not native.existing_rule(name):
        native.local_repository(name = name, path = path)

# Well-known protobuf types, symlinked from /usr/include into @com_google_protobuf.
_WELL_KNOWN_PROTOS = [
    "any",
    "api",
    "descriptor",
    "duration",
    "empty",
    "field_mask",
    "source_context",
    "struct",
    "timestamp",
    "type",
    "wrappers",
]

# buildifier: disable=unnamed-macro (a WORKSPACE macro, like grpc_deps(): no target to name)
def concurry_deps():
    """Declares concurry's dependency repositories that are not declared yet."""

    # ---- Bazel 4.2.3 (Debian bazel-bootstrap) internals, offline. Without
    # these, Bazel's own WORKSPACE suffix would download rules_cc, rules_java,
    # remote_coverage_tools and platforms.
    #
    # Shim: cc/defs.bzl forwards to the native rules (Debian's rules_cc 0.0.4
    # is too new for Bazel 4.2.3).
    _system(
        name = "rules_cc",
        packages = ["bazel-bootstrap"],
        required = [],
        build_file = False,
        files = {
            "rules_cc/cc.BUILD": "cc/BUILD.bazel",
            "rules_cc/defs.bzl": "cc/defs.bzl",
        },
    )

    # Stub with empty filegroups coverage_report_generator and lcov_merger.
    _system(name = "remote_coverage_tools", packages = ["bazel-bootstrap"], required = [])
    _local("rules_java", "/usr/share/bazel/rules/java")  # bazel-rules-java
    _local("platforms", "/usr/share/bazel/tools/platforms")  # bazel-platforms

    # bazel-skylib 1.0.3: Abseil's and oneTBB's own BUILD files need it when
    # they are built from source (--config=tsan overrides them).
    _local("bazel_skylib", "/usr/share/bazel/tools/skylib")

    # ---- System (Debian) libraries under their upstream repository names.
    if not native.existing_rule("com_google_absl"):
        system_absl_repository(name = "com_google_absl")

    _system(
        name = "com_google_googletest",
        packages = ["libgtest-dev", "libgmock-dev"],
        required = ["/usr/include/gtest/gtest.h", "/usr/include/gmock/gmock.h"],
    )
    _system(
        name = "com_github_google_benchmark",
        packages = ["libbenchmark-dev"],
        required = ["/usr/include/benchmark/benchmark.h"],
    )
    # py_binary/py_test run on Debian's /usr/bin/python3 (tools/python/BUILD.bazel).
    native.register_toolchains("@concurry//tools/python:debian_python3_toolchain")

    # Google Benchmark's compare.py library (gbench: the U test), for //benchmarks:report.
    _system(
        name = "benchmark_tools",
        packages = ["libbenchmark-tools", "python3-scipy"],
        required = [
            "/usr/share/benchmark/gbench/report.py",
            "/usr/lib/python3/dist-packages/scipy/stats/__init__.py",
        ],
        symlinks = {
            "gbench/%s.py" % module: "/usr/share/benchmark/gbench/%s.py" % module
            for module in ["__init__", "report", "util"]
        },
    )
    _system(
        name = "onetbb",
        packages = ["libtbb-dev"],
        required = ["/usr/include/oneapi/tbb.h"],
    )
    _system(
        name = "com_github_gflags_gflags",
        packages = ["libgflags-dev"],
        required = ["/usr/include/gflags/gflags.h"],
    )
    _system(
        name = "com_github_google_glog",
        packages = ["libgoogle-glog-dev"],
        required = ["/usr/include/glog/logging.h"],
    )
    _system(
        name = "com_github_uscilab_cereal",
        packages = ["libcereal-dev"],
        required = ["/usr/include/cereal/cereal.hpp"],
    )
    _system(
        name = "asio",
        packages = ["libasio-dev"],
        required = ["/usr/include/asio.hpp"],
    )
    _system(
        name = "caf",
        packages = ["libcaf-dev"],
        required = ["/usr/include/caf/all.hpp"],
    )

    # hiredis 0.14.1 (Debian libhiredis-dev), the Redis client under //limits/redis. It has no
    # TLS support (hiredis_ssl came with hiredis 1.0), so neither has concurry's Redis client.
    _system(
        name = "com_github_redis_hiredis",
        packages = ["libhiredis-dev"],
        required = ["/usr/include/hiredis/hiredis.h"],
    )
    _system(
        name = "com_google_protobuf",
        packages = ["libprotobuf-dev", "protobuf-compiler"],
        required = ["/usr/include/google/protobuf/message.h", "/usr/bin/protoc"],
        files = {"com_google_protobuf/protoc.sh": "protoc.sh"},
        symlinks = {
            "google/protobuf/%s.proto" % p: "/usr/include/google/protobuf/%s.proto" % p
            for p in _WELL_KNOWN_PROTOS
        },
    )
    _system(
        name = "com_github_grpc_grpc",
        packages = ["libgrpc++-dev", "protobuf-compiler-grpc"],
        required = ["/usr/include/grpcpp/grpcpp.h", "/usr/bin/grpc_cpp_plugin"],
        files = {
            "com_github_grpc_grpc/bazel.BUILD": "bazel/BUILD.bazel",
            "com_github_grpc_grpc/cc_grpc_library.bzl": "bazel/cc_grpc_library.bzl",
            "com_github_grpc_grpc/grpc_cpp_plugin.sh": "grpc_cpp_plugin.sh",
            "com_github_grpc_grpc/grpc_genrule.bzl": "bazel/grpc_genrule.bzl",
        },
    )
