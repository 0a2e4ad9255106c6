"""concurry_worker_host: a binary that serves Mode::kRemote workers (docs/remote.md)."""

def concurry_worker_host(name, deps, srcs = [], **kwargs):
    """A worker host serving every class and function registered in `deps` and `srcs`.

    C++ cannot ship code to another machine, so the host is a program built with the worker
    classes in it. Registrations (CONCURRY_REGISTER_WORKER, CONCURRY_REGISTER_FUNCTION) run at
    start-up from static initializers: put them in `srcs`, or in cc_library targets with
    `alwayslink = True`, else the linker drops them since nothing calls them by name.

        concurry_worker_host(
            name = "my_host",
            deps = [":my_registered_classes"],  # alwayslink = True
        )

    Run it as `my_host --token_file=token [--listen=0.0.0.0:7000 --tls_cert=... --tls_key=...]`.

    Args:
      name: the cc_binary's name.
      deps: libraries that register worker classes and functions.
      srcs: more sources with registrations (optional).
      **kwargs: passed to the cc_binary (visibility, tags, testonly, ...).
    """
    native.cc_binary(
        name = name,
        srcs = srcs,
        deps = deps + [Label("//workers/remote:host_main")],
        **kwargs
    )
