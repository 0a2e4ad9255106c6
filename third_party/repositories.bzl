"""Repository rules that expose Debian's system libraries under upstream repository names.

Used by concurry_deps() in //:deps.bzl; not meant to be loaded directly.

* system_repository: writes a WORKSPACE, copies BUILD/.bzl/.sh templates from
  //third_party:system/, and symlinks files from the system into the repository.
  Every cc_library in the templates carries only linkopts (and deps): headers
  come from /usr/include, a built-in include directory of the toolchain.
* system_absl_repository: generates the Abseil BUILD tree (one cc_library per
  absl_*.pc module, at the label upstream Abseil uses) from Debian's pkg-config
  files at fetch time.

Both rules are `local`: they are re-run when the Bazel server restarts, so an
upgraded system package is picked up without `bazel clean --expunge`.
"""

_SETUP_HINT = "On Debian 12, concurry's tools/setup.sh installs every package concurry needs."

def _check_required(rctx):
    missing = [p for p in rctx.attr.required if not rctx.path(p).exists]
    if missing:
        fail("@%s wraps the Debian package(s) %s, but %s is missing. %s" % (
            rctx.name,
            ", ".join(rctx.attr.packages),
            ", ".join(missing),
            _SETUP_HINT,
        ))

def _system_repository_impl(rctx):
    _check_required(rctx)
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name, executable = False)
    if rctx.attr.build_file:
        rctx.template("BUILD.bazel", rctx.attr.build_file, executable = False)
    else:
        rctx.file("BUILD.bazel", "", executable = False)
    for label, dest in rctx.attr.files.items():
        rctx.template(dest, label, executable = dest.endswith(".sh"))
    for dest, target in rctx.attr.symlinks.items():
        rctx.symlink(target, dest)

system_repository = repository_rule(
    doc = "A repository of BUILD files over a Debian system library (headers in /usr/include).",
    implementation = _system_repository_impl,
    local = True,
    attrs = {
        "build_file": attr.label(
            allow_single_file = True,
            doc = "Template copied to the repository's BUILD.bazel (default: an empty one).",
        ),
        "files": attr.label_keyed_string_dict(
            allow_files = True,
            doc = "Further templates: label -> path inside the repository (*.sh become executable).",
        ),
        "symlinks": attr.string_dict(doc = "Path inside the repository -> absolute system path."),
        "required": attr.string_list(doc = "System files that must exist (checked at fetch time)."),
        "packages": attr.string_list(doc = "Debian packages providing the library (for errors)."),
    },
)

# ---- Abseil -----------------------------------------------------------------
# Maps each absl_<name>.pc module to (package, target) as in upstream Abseil's
# BUILD.bazel files of the same version (20220623). 134 of the 137 labels exist
# upstream; _CMAKE_ONLY lists the other three.

_ABSL_EXPLICIT = {
    "algorithm": ("algorithm", "algorithm"),
    "algorithm_container": ("algorithm", "container"),
    "container_common": ("container", "common"),
    "exponential_biased": ("profiling", "exponential_biased"),
    "periodic_sampler": ("profiling", "periodic_sampler"),
    "sample_recorder": ("profiling", "sample_recorder"),
    "flags": ("flags", "flag"),
    "flags_internal": ("flags", "flag_internal"),
    "hash": ("hash", "hash"),
    "city": ("hash", "city"),
    "low_level_hash": ("hash", "low_level_hash"),
    "memory": ("memory", "memory"),
    "meta": ("meta", "meta"),
    "type_traits": ("meta", "type_traits"),
    "numeric": ("numeric", "numeric"),
    "bits": ("numeric", "bits"),
    "int128": ("numeric", "int128"),
    "numeric_representation": ("numeric", "representation"),
    "random_random": ("random", "random"),
    "status": ("status", "status"),
    "statusor": ("status", "statusor"),
    "strings": ("strings", "strings"),
    "strings_internal": ("strings", "internal"),
    "synchronization": ("synchronization", "synchronization"),
    "graphcycles_internal": ("synchronization", "graphcycles_internal"),
    "kernel_timeout_internal": ("synchronization", "kernel_timeout_internal"),
    "time": ("time", "time"),
    "civil_time": ("time/internal/cctz", "civil_time"),
    "time_zone": ("time/internal/cctz", "time_zone"),
    "utility": ("utility", "utility"),
    "scoped_set_env": ("base", "scoped_set_env"),
    "strerror": ("base", "strerror"),
    "cleanup": ("cleanup", "cleanup"),
    "cleanup_internal": ("cleanup", "cleanup_internal"),
}

# Modules whose target name is the module name, by package.
_ABSL_GROUPS = {
    "base": [
        "atomic_hook",
        "base",
        "base_internal",
        "config",
        "core_headers",
        "dynamic_annotations",
        "endian",
        "errno_saver",
        "fast_type_id",
        "log_severity",
        "malloc_internal",
        "prefetch",
        "pretty_function",
        "raw_logging_internal",
        "spinlock_wait",
        "throw_delegate",
    ],
    "container": [
        "btree",
        "compressed_tuple",
        "container_memory",
        "counting_allocator",
        "fixed_array",
        "flat_hash_map",
        "flat_hash_set",
        "hash_function_defaults",
        "hash_policy_traits",
        "hashtable_debug",
        "hashtable_debug_hooks",
        "hashtablez_sampler",
        "inlined_vector",
        "inlined_vector_internal",
        "layout",
        "node_hash_map",
        "node_hash_set",
        "node_slot_policy",
        "raw_hash_map",
        "raw_hash_set",
    ],
    "debugging": [
        "debugging",
        "debugging_internal",
        "demangle_internal",
        "examine_stack",
        "failure_signal_handler",
        "leak_check",
        "stacktrace",
        "symbolize",
    ],
    "functional": [
        "any_invocable",
        "bind_front",
        "function_ref",
    ],
    "types": [
        "any",
        "bad_any_cast",
        "bad_any_cast_impl",
        "bad_optional_access",
        "bad_variant_access",
        "compare",
        "optional",
        "span",
        "variant",
    ],
}

# (module prefix, package, strip the prefix from the target name?)
_ABSL_BY_PREFIX = [
    ("flags_", "flags", True),
    ("random_internal_", "random/internal", True),
    ("random_", "random", True),
    ("cord", "strings", False),
    ("str_format", "strings", False),
]

# Exist only in Abseil's CMake build; kept because other .pc files require them.
_ABSL_CMAKE_ONLY = [("meta", "meta"), ("debugging", "debugging"), ("numeric", "numeric")]

def _absl_label_of(name):
    if name in _ABSL_EXPLICIT:
        return _ABSL_EXPLICIT[name]
    for pkg, names in _ABSL_GROUPS.items():
        if name in names:
            return (pkg, name)
    for prefix, pkg, strip in _ABSL_BY_PREFIX:
        if name.startswith(prefix):
            return (pkg, name[len(prefix):] if strip else name)
    fail("@com_google_absl: no upstream label known for the pkg-config module absl_%s; " % name +
         "add it to _ABSL_EXPLICIT in concurry's third_party/repositories.bzl")

def _parse_pc(content):
    """Returns (required absl modules, own absl libraries) of one .pc file."""
    requires, libs = [], []
    for line in content.splitlines():
        if line.startswith("Requires:"):
            for item in line[len("Requires:"):].split(","):
                words = item.strip().split(" ")
                if words and words[0].startswith("absl_"):
                    requires.append(words[0][len("absl_"):])
        elif line.startswith("Libs:"):
            libs = [w[len("-l"):] for w in line.split(" ") if w.startswith("-labsl_")]
    return requires, libs

def _dep_key(label):
    """buildifier's order for deps: ":x" first, then "//pkg[:x]"."""
    group = 0 if label.startswith(":") else 1
    pkg, _, name = label.partition(":")
    return (group, pkg, name)

def _format_list(attr, items):
    """Formats one list attribute as buildifier does (1 item inline, else one per line)."""
    if not items:
        return ""
    if len(items) == 1:
        return '    %s = ["%s"],\n' % (attr, items[0])
    return "    %s = [\n%s    ],\n" % (attr, "".join(['        "%s",\n' % x for x in items]))

def _pkg_config_variable(rctx, pkg_config, variable):
    result = rctx.execute([pkg_config, "--variable=" + variable, "absl_base"])
    if result.return_code != 0 or not result.stdout.strip():
        fail("@com_google_absl: `pkg-config --variable=%s absl_base` failed (is libabsl-dev " % variable +
             "installed?): " + result.stderr + " " + _SETUP_HINT)
    return result.stdout.strip()

def _system_absl_repository_impl(rctx):
    pkg_config = rctx.which("pkg-config")
    if not pkg_config:
        fail("@com_google_absl needs pkg-config (Debian package pkg-config). " + _SETUP_HINT)
    pc_dir = rctx.path(_pkg_config_variable(rctx, pkg_config, "pcfiledir"))
    lib_dir = _pkg_config_variable(rctx, pkg_config, "libdir")

    targets = {}  # package -> [(target, deps, linkopts)]
    modules = sorted([
        p.basename[len("absl_"):-len(".pc")]
        for p in pc_dir.readdir()
        if p.basename.startswith("absl_") and p.basename.endswith(".pc")
    ])
    for name in modules:
        requires, libs = _parse_pc(rctx.read(pc_dir.get_child("absl_%s.pc" % name)))
        pkg, target = _absl_label_of(name)
        deps = []
        for required in requires:
            dep_pkg, dep_target = _absl_label_of(required)
            if dep_pkg == pkg:
                deps.append(":" + dep_target)
            elif dep_pkg.split("/")[-1] == dep_target:
                deps.append("//absl/" + dep_pkg)
            else:
                deps.append("//absl/%s:%s" % (dep_pkg, dep_target))
        linkopts = ["-l" + lib for lib in libs if rctx.path("%s/lib%s.so" % (lib_dir, lib)).exists]
        targets.setdefault(pkg, []).append((target, sorted(deps, key = _dep_key), linkopts))

    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name, executable = False)
    rctx.file("BUILD.bazel", "# Generated by concurry's system_absl_repository; do not edit.\n", executable = False)
    for pkg, rules in targets.items():
        content = [
            "# Generated by concurry's system_absl_repository from Debian libabsl-dev " +
            "pkg-config files; do not edit.\n",
            'package(default_visibility = ["//visibility:public"])\n',
        ]
        for target, deps, linkopts in sorted(rules):
            content.append("\n")
            if (pkg, target) in _ABSL_CMAKE_ONLY:
                content.append("# CMake-only aggregate, absent from upstream's Bazel build: " +
                               "do not depend on it.\n")
            content.append('cc_library(\n    name = "%s",\n' % target)
            content.append(_format_list("linkopts", linkopts))
            content.append(_format_list("deps", deps))
            content.append(")\n")
        rctx.file("absl/%s/BUILD.bazel" % pkg, "".join(content), executable = False)

system_absl_repository = repository_rule(
    doc = "@com_google_absl over Debian's libabsl-dev, generated from its absl_*.pc files.",
    implementation = _system_absl_repository_impl,
    local = True,
)
