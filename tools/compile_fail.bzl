"""compile_fail_test: snippets of library misuse that must fail to compile with a clear message.

See tools/compile_fail_test.sh for the snippet format. The snippets are compiled with the system
g++ against concurry's headers (//:headers) and Debian's Abseil and oneTBB headers; the tests are
tagged "compile_fail" so that the sanitizer legs of .ci/run, which would only repeat them, skip
them.
"""

def compile_fail_test(name, srcs, **kwargs):
    native.sh_test(
        name = name,
        srcs = ["//tools:compile_fail_test.sh"],
        args = ["$(location %s)" % src for src in srcs],
        data = srcs + ["//:headers"],
        size = "medium",
        tags = ["compile_fail"] + kwargs.pop("tags", []),
        **kwargs
    )
