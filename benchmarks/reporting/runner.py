"""Runs the suite's benchmark binaries with JSON output and shows progress with an ETA."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

# Per mode: the passes over each binary (repetitions), Google Benchmark's min time, and the time
# allowed per binary.
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
    try:
        out = subprocess.run([path, "--benchmark_list_tests", "--benchmark_filter=" + name_filter],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             errors="replace", timeout=60, check=False)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError("%s --benchmark_list_tests did not finish in 60 s" % path) from e
    except OSError as e:
        raise RuntimeError("%s cannot be run: %s" % (path, e)) from e
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


def _run_pass(args, env, log, known, on_line, deadline):
    """Runs one pass of a binary in its own process group; returns its exit code, None on timeout.

    Google Benchmark prints a benchmark's console line when the benchmark is done; on_line is
    called for each line naming one of `known`.
    """
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                               errors="replace", bufsize=1, start_new_session=True)
    timed_out = threading.Event()

    def kill():
        timed_out.set()
        # The whole group: a child the benchmark started (a fork server, a Python peer) could
        # otherwise keep the pipe open, and the read below would never end.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # A hung binary prints nothing, so the deadline cannot be checked between lines.
    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), kill)
    watchdog.start()
    try:
        for line in process.stdout:
            log.write(line)
            if line.split(" ", 1)[0] in known:
                on_line()
        code = process.wait()
    finally:
        watchdog.cancel()
    return None if timed_out.is_set() else code


def merge_passes(passes):
    """One Google Benchmark JSON document from single-repetition passes: pass i is repetition i."""
    merged = {"context": passes[0].get("context", {}), "benchmarks": []}
    for index, document in enumerate(passes):
        for run in document.get("benchmarks", []):
            run = dict(run, repetition_index=index, repetitions=len(passes))
            merged["benchmarks"].append(run)
    return merged


def run_binary(path, names, out_json, log_path, settings, name_filter, env, progress, label):
    """Runs one binary `repetitions` times; returns (exit code or None on timeout, seconds).

    Each pass runs every selected benchmark once, and its runs become one repetition of each.
    Passes instead of Google Benchmark's --benchmark_repetitions: a slow phase of the machine
    falls on concurry and its peer alike (they run seconds apart in every pass, not minutes),
    peers that measure once per process (the Python scripts) are measured again each time, and
    every finished benchmark prints a line, which is how progress is counted (Google Benchmark
    1.7 prints a repeated benchmark only after its last repetition). The merged JSON goes to
    out_json.
    """
    repetitions = settings["repetitions"]
    expected = len(names) * repetitions
    known = set(names)
    done = [0]
    start = time.monotonic()
    deadline = start + settings["timeout_s"]

    def on_line():
        done[0] += 1
        progress.done_runs += 1
        progress.show(label, done[0], expected)

    passes, code = [], 0
    with open(log_path, "w") as log:
        for index in range(repetitions):
            pass_json = "%s.pass%d" % (out_json, index)
            args = [path, "--benchmark_filter=" + name_filter,
                    "--benchmark_min_time=%g" % settings["min_time"],
                    "--benchmark_out=" + pass_json, "--benchmark_out_format=json",
                    "--benchmark_format=console", "--benchmark_color=false"]
            log.write("---- pass %d of %d: %s\n" % (index + 1, repetitions, " ".join(args)))
            log.flush()
            code = _run_pass(args, env, log, known, on_line, deadline)
            document = None
            if os.path.exists(pass_json):
                with open(pass_json, errors="replace") as f:
                    try:
                        document = json.load(f)
                    except json.JSONDecodeError:
                        document = None
                os.remove(pass_json)
            if code is None:
                log.write("\nkilled by the report after %d s\n" % settings["timeout_s"])
            if code != 0 or document is None:
                code = code if code != 0 else -1
                break
            passes.append(document)
    if passes and code == 0:
        with open(out_json, "w") as f:
            json.dump(merge_passes(passes), f)
    # Runs not seen (a crash, a timeout) still count as done, so the ETA stays right.
    progress.done_runs += expected - done[0]
    progress.show(label, done[0], expected, force=True)
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
