"""compile_fail_test: snippets of library misuse that must fail to compile with a clear message.

See tools/compile_fail_test.sh for the snippet format. The snippets are compiled with the system
g++ against concurry's headers (//:headers) and Debian's Abseil and oneTBB headers. Each snippet
is its own test (<name>_<snippet>, so Bazel runs them in parallel), and `name` is a test_suite of
them. The tests are tagged "compile_fail" so that the sanitizer legs of .ci/run, which would only
repeat them, skip them.
"""

def compile_fail_test(name, srcs, size = "medium", tags = [], **kwargs):
    tests = []
    for src in srcs:
        test = "%s_%s" % (name, src.split("/")[-1].rsplit(".", 1)[0])
        native.sh_test(
            name = test,
            srcs = ["//tools:compile_fail_test.sh"],
            args = ["$(location %s)" % src],
            data = [src, "//:headers"],
            size = size,
            tags = ["compile_fail"] + tags,
            **kwargs
        )
        tests.append(test)
    native.test_suite(name = name, tests = tests)
