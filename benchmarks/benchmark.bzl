"""The benchmark suite's convention: concurry_benchmark() and concurry_benchmark_suite().

Every benchmark binary of //benchmarks is declared with concurry_benchmark(), a cc_binary that
also records how it was built (compiler, compilation mode, sanitizers) in its JSON context.
concurry_benchmark_suite(), called once at the end of the BUILD file, collects them:

  :<name>                  the report tool (py_binary): bazel run //benchmarks:report -- --help
  :<name>_binaries         every benchmark binary, built optimized (-c opt -march=native, what
                           --config=opt sets) whatever the command line says, plus a manifest
  :<name>_convention_test  fails, naming it, for a cc_binary of the package outside the convention,
                           and for a goal in goals.json whose binary or benchmark does not exist
"""

_TAG = "concurry_benchmark"

def concurry_benchmark(name, deps = [], tags = [], **kwargs):
    """A Google Benchmark binary of the suite: a cc_binary with the build context linked in."""
    if [r for r in native.existing_rules().values() if r["kind"] == "_benchmark_binaries"]:
        fail("concurry_benchmark(%s) comes after concurry_benchmark_suite(): declare every " % name +
             "benchmark above the suite, which collects the ones declared before it")
    native.cc_binary(
        name = name,
        deps = deps + ["//benchmarks:build_context"],
        tags = tags + [_TAG],
        **kwargs
    )

def _optimized_impl(settings, _attr):
    copts = list(settings["//command_line_option:copt"])
    if "-march=native" not in copts:
        copts.append("-march=native")
    return {
        "//command_line_option:compilation_mode": "opt",
        "//command_line_option:copt": copts,
    }

# What --config=opt sets (.bazelrc), applied to the benchmark binaries only: figures from a
# fastbuild binary would be meaningless, and `bazel run //benchmarks:report` must not depend on
# the user remembering a flag.
_optimized = transition(
    implementation = _optimized_impl,
    inputs = ["//command_line_option:copt"],
    outputs = ["//command_line_option:compilation_mode", "//command_line_option:copt"],
)

def _runfiles_path(ctx, file):
    # The path under the runfiles root: <repository>/<package>/<name>. short_path is
    # "../<repository>/..." for a file of an external repository (concurry used from another
    # workspace) and "<package>/<name>" for one of the main repository.
    if file.short_path.startswith("../"):
        return file.short_path[3:]
    return ctx.workspace_name + "/" + file.short_path

def _benchmark_binaries_impl(ctx):
    entries = []
    runfiles = ctx.runfiles()
    for target in ctx.attr.binaries:
        executable = target[DefaultInfo].files_to_run.executable
        entries.append({"name": executable.basename, "path": _runfiles_path(ctx, executable)})
        runfiles = runfiles.merge(ctx.runfiles(files = [executable]))
        runfiles = runfiles.merge(target[DefaultInfo].default_runfiles)
    manifest = ctx.actions.declare_file(ctx.label.name + ".json")
    ctx.actions.write(manifest, struct(binaries = entries).to_json())
    return [DefaultInfo(
        files = depset([manifest]),
        runfiles = runfiles.merge(ctx.runfiles(files = [manifest])),
    )]

_benchmark_binaries = rule(
    implementation = _benchmark_binaries_impl,
    doc = "The suite's binaries, optimized, in runfiles, and a JSON manifest of their paths.",
    attrs = {
        "binaries": attr.label_list(cfg = _optimized, mandatory = True),
        "_allowlist_function_transition": attr.label(
            default = "@bazel_tools//tools/allowlists/function_transition_allowlist",
        ),
    },
)

def concurry_benchmark_suite(name, goals, srcs, deps = [], **kwargs):
    """The report tool over every concurry_benchmark() declared above this call in the package."""
    rules = native.existing_rules().values()
    benchmarks = sorted([r["name"] for r in rules if _TAG in r.get("tags", ())])
    binaries = sorted([r["name"] for r in rules if r["kind"] == "cc_binary"])
    _benchmark_binaries(
        name = name + "_binaries",
        binaries = [":" + b for b in benchmarks],
        tags = ["manual"],
    )
    native.py_binary(
        name = name,
        srcs = srcs,
        main = "reporting/main.py",
        python_version = "PY3",
        srcs_version = "PY3",
        data = [goals, ":" + name + "_binaries"],
        args = [
            "--manifest=$(rootpath :%s_binaries)" % name,
            "--goals=$(rootpath %s)" % goals,
        ],
        deps = deps,
        # Not built by `bazel build //...`: it builds every benchmark a second time, optimized.
        tags = ["manual"],
        **kwargs
    )

    # The convention test runs the fastbuild binaries (bazel test's own configuration) with
    # --benchmark_list_tests only.
    native.py_test(
        name = name + "_convention_test",
        size = "small",
        srcs = ["reporting/convention_test.py"],
        main = "reporting/convention_test.py",
        python_version = "PY3",
        srcs_version = "PY3",
        data = [goals] + [":" + b for b in benchmarks],
        args = ["--goals=$(rootpath %s)" % goals] +
               ["--benchmark=%s=$(rootpath :%s)" % (b, b) for b in benchmarks] +
               ["--cc_binary=" + b for b in binaries],
        # Python over the binaries' --benchmark_list_tests: nothing for a sanitizer to check.
        tags = ["no_sanitizers"],
        deps = deps,
    )
