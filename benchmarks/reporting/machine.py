"""The context a report records, so a reader can tell whether two reports are comparable."""

import datetime
import os
import platform
import subprocess

# Debian packages whose versions the figures depend on (the peers' and the library's).
PACKAGES = ("g++", "libabsl-dev", "libtbb-dev", "libbenchmark-dev", "libcaf-dev", "libasio-dev",
            "libgrpc++-dev", "libprotobuf-dev", "python3")


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cpu_model():
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _packages():
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Package}\\t${Version}\\n"] +
                             list(PACKAGES), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return dict(line.split("\t", 1) for line in out.stdout.splitlines() if "\t" in line)


def _git(source_dir):
    """The commit of the concurry checkout at source_dir, with a "+dirty" mark; None if unknown."""
    if not source_dir:
        return None
    try:
        head = subprocess.run(["git", "-C", source_dir, "rev-parse", "HEAD"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              timeout=30, check=False)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", source_dir, "status", "--porcelain",
                                 "--untracked-files=no"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def collect(source_dir):
    """Machine facts at the start of a run. source_dir: concurry's checkout (for the commit)."""
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_model": _cpu_model(),
        "cpus_online": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average_start": list(os.getloadavg()),
        "governor": governor or "not readable (no cpufreq: a VM or a fixed clock)",
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "packages": _packages(),
        "concurry_commit": _git(source_dir),
    }


def build_context(raw):
    """How a binary was built and what Google Benchmark saw, from its JSON context."""
    context = raw.get("context", {})
    keys = ("concurry_compiler", "concurry_compilation_mode", "concurry_optimized",
            "concurry_ndebug", "concurry_sanitizers", "concurry_target_features",
            "library_build_type", "num_cpus", "mhz_per_cpu", "cpu_scaling_enabled", "load_avg")
    return {k: context[k] for k in keys if k in context}


def build_warnings(binaries):
    """Why the figures of some binaries are not measurements (unoptimized, sanitized)."""
    warnings = []
    for name, info in sorted(binaries.items()):
        build = info.get("build", {})
        if build.get("concurry_optimized") == "no":
            warnings.append("%s was built without optimization (%s)" %
                            (name, build.get("concurry_compilation_mode", "?")))
        if build.get("concurry_sanitizers", "none") != "none":
            warnings.append("%s was built with sanitizers (%s)" %
                            (name, build["concurry_sanitizers"]))
    return warnings
