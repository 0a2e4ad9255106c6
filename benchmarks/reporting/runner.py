"""Runs the suite's benchmark binaries with JSON output and shows progress with an ETA."""

import os
import subprocess
import sys
import threading
import time

# Per mode: Google Benchmark flags and the time allowed per binary.
MODES = {
    # Every benchmark once, for a moment: checks that each runs; its figures are not measurements.
    "smoke": {"min_time": 0.01, "repetitions": 1, "timeout_s": 600, "goals_only": False},
    # The benchmarks goals.json names, a few minutes on 2 cores, with enough repetitions for the
    # U test of the regression gate (5 against 5 can reach p < 0.01).
    "quick": {"min_time": 0.05, "repetitions": 5, "timeout_s": 900, "goals_only": True},
    # Every benchmark, with compare.py's recommended 9+ repetitions: stable medians.
    "full": {"min_time": 0.1, "repetitions": 9, "timeout_s": 3600, "goals_only": False},
}


def list_benchmarks(path, name_filter, env):
    """The benchmark names `path` would run with `name_filter`."""
    out = subprocess.run([path, "--benchmark_list_tests", "--benchmark_filter=" + name_filter],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=60, check=False)
    if out.returncode != 0:
        raise RuntimeError("%s --benchmark_list_tests failed (exit %d): %s" %
                           (path, out.returncode, out.stderr.strip()[-2000:]))
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def exact_filter(names):
    """A --benchmark_filter (POSIX extended regex) that matches exactly `names`."""
    def escape(name):
        return "".join("\\" + c if c in ".[]()*+?{}|^$\\" else c for c in name)
    return "^(" + "|".join(escape(n) for n in names) + ")$"


def _format_duration(seconds):
    seconds = max(0, int(seconds))
    return "%d:%02d" % (seconds // 60, seconds % 60)


class Progress:
    """Prints which binary runs, how far it is and the ETA of the whole suite, on stderr.

    On a terminal one line is rewritten in place; elsewhere (CI) a line is printed at most every
    15 seconds and at each binary's end.
    """

    def __init__(self, total_runs, stream=sys.stderr):
        self.total_runs = max(1, total_runs)
        self.done_runs = 0
        self.start = time.monotonic()
        self.stream = stream
        self.tty = stream.isatty()
        self.last_print = 0.0

    def eta(self):
        elapsed = time.monotonic() - self.start
        if self.done_runs == 0:
            return None
        return elapsed / self.done_runs * (self.total_runs - self.done_runs)

    def show(self, label, binary_done, binary_total, force=False):
        now = time.monotonic()
        if not self.tty and not force and now - self.last_print < 15:
            return
        self.last_print = now
        eta = self.eta()
        line = "%s: %d/%d runs | suite %d%%, %s elapsed, ETA %s" % (
            label, binary_done, binary_total, 100 * self.done_runs // self.total_runs,
            _format_duration(now - self.start), _format_duration(eta) if eta is not None else "?")
        if self.tty:
            self.stream.write("\r\033[K" + line)
            if force:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def run_binary(path, names, out_json, log_path, settings, name_filter, env, progress, label):
    """Runs one binary; returns (exit code or None on timeout, seconds).

    `names` are the benchmarks it will run (from list_benchmarks): each finished repetition prints
    a console line that starts with its name, which is how progress is counted.
    """
    repetitions = settings["repetitions"]
    args = [path, "--benchmark_filter=" + name_filter,
            "--benchmark_min_time=%g" % settings["min_time"],
            "--benchmark_repetitions=%d" % repetitions,
            "--benchmark_out=" + out_json, "--benchmark_out_format=json",
            "--benchmark_format=console", "--benchmark_color=false"]
    if repetitions > 1:
        # Repetitions of different benchmarks interleaved in random order: a slow phase of the
        # machine then hits concurry and its peer alike instead of one of them.
        args.append("--benchmark_enable_random_interleaving=true")
    expected = len(names) * repetitions
    known = set(names)
    done = 0
    start = time.monotonic()
    timed_out = threading.Event()
    with open(log_path, "w") as log:
        process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                                   bufsize=1)

        def kill():
            timed_out.set()
            process.kill()

        # A hung binary prints nothing, so the deadline cannot be checked between lines.
        watchdog = threading.Timer(settings["timeout_s"], kill)
        watchdog.start()
        try:
            for line in process.stdout:
                log.write(line)
                if line.split(" ", 1)[0] in known:
                    done += 1
                    progress.done_runs += 1
                    progress.show(label, done, expected)
            code = process.wait()
        finally:
            watchdog.cancel()
        if timed_out.is_set():
            log.write("\nkilled by the report after %d s\n" % settings["timeout_s"])
            code = None
    # Runs not seen (a crash, a timeout, a filter the list and the run read differently) still
    # count as done, so the ETA of the remaining binaries stays right.
    progress.done_runs += expected - done
    progress.show(label, expected if code == 0 else done, expected, force=True)
    return code, time.monotonic() - start


def runfiles_dir():
    """The runfiles root of the report (<root>/<repository>/benchmarks/...)."""
    if os.environ.get("RUNFILES_DIR"):
        return os.environ["RUNFILES_DIR"]
    # bazel run's working directory is <root>/<main repository>.
    return os.path.dirname(os.path.abspath(os.getcwd()))


def resolve(root, rootpath):
    """A $(rootpath) (relative to the main repository, or external/<repo>/...) under `root`."""
    if rootpath.startswith("external/"):
        return os.path.join(root, rootpath[len("external/"):])
    if rootpath.startswith("../"):
        return os.path.join(root, rootpath[3:])
    return os.path.join(os.path.abspath(os.getcwd()), rootpath)
