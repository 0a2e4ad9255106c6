"""concurry-cpp's benchmark suite: runs every benchmark binary, judges goals, gates regressions.

  bazel run //benchmarks:report -- [--mode=smoke|quick|full] [--out=DIR] [--baseline=FILE]
                                   [--filter=REGEX] [--binaries=a,b] [--strict-goals]

Writes report.json, report.md, one SVG chart per component, index.html and raw/<binary>.json
into --out, and prints the verdict tables. Exit status: 0; 1 when a binary failed, when a
benchmark regressed against --baseline, or (with --strict-goals) when a goal was missed; 2 for
bad arguments. docs/benchmarks.md explains the goals, the verdicts and the gate.
"""

import argparse
import json
import os
import re
import sys

_DEBIAN_PYTHON = "/usr/bin/python3"
# A benchmark that only absorbs a process's warm-up; quick mode runs it too.
WARM_UP = "BM_WarmUp"


def _ensure_interpreter():
    """Re-runs under Debian's python3 when this one lacks matplotlib or scipy.

    tools/setup.sh installs python3-matplotlib and python3-scipy for Debian's interpreter; a
    python3 found first on PATH (pyenv, a virtualenv) may not have them.
    """
    try:
        import matplotlib  # noqa: F401
        import scipy  # noqa: F401
        return
    except ImportError as e:
        missing = e.name
    if os.path.realpath(sys.executable) != os.path.realpath(_DEBIAN_PYTHON) and \
            os.access(_DEBIAN_PYTHON, os.X_OK) and not os.environ.get("CONCURRY_REPORT_REEXEC"):
        os.environ["CONCURRY_REPORT_REEXEC"] = "1"
        os.execv(_DEBIAN_PYTHON, [_DEBIAN_PYTHON] + sys.argv)
    sys.exit("report: Python module %r is missing from %s; install python3-matplotlib and "
             "python3-scipy (tools/setup.sh does)" % (missing, sys.executable))


_ensure_interpreter()

# pylint: disable=wrong-import-position
from reporting import analysis  # noqa: E402
from reporting import goals as goals_lib  # noqa: E402
from reporting import machine  # noqa: E402
from reporting import render  # noqa: E402
from reporting import runner  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="report", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(runner.MODES), default="quick",
                        help="smoke: every benchmark runs once (CI); quick: a few minutes; "
                             "full: stable medians (default: quick)")
    parser.add_argument("--out", help="output directory (default: "
                                      "<workspace>/bazel-bin/concurry_benchmark_report)")
    parser.add_argument("--baseline", help="an earlier report.json: fail on regressions")
    parser.add_argument("--filter", default=".", help="regex of benchmark names to run "
                                                     "(Google Benchmark's --benchmark_filter)")
    parser.add_argument("--binaries", help="comma-separated binaries to run (default: all)")
    parser.add_argument("--strict-goals", action="store_true",
                        help="also exit 1 when a goal is missed")
    parser.add_argument("--regression-threshold", type=float, default=0.10,
                        help="a slowdown larger than this fraction of the baseline's median, "
                             "with significance, is a regression (default 0.10)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="significance level of the U test (default 0.05)")
    parser.add_argument("--repetitions", type=int, help="override the mode's repetitions")
    parser.add_argument("--min-time", type=float, help="override the mode's min time (s)")
    parser.add_argument("--from-json", help="re-render (and gate) an existing report.json "
                                            "instead of running the binaries")
    parser.add_argument("--list", action="store_true", help="list the binaries and goals")
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--goals", required=True, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repetitions is not None and args.repetitions < 1:
        parser.error("--repetitions must be at least 1, got %d" % args.repetitions)
    if args.min_time is not None and not args.min_time > 0:
        parser.error("--min-time must be positive, got %g" % args.min_time)
    if not 0 <= args.regression_threshold < 10:
        parser.error("--regression-threshold is a fraction (0.1 = 10%%), got %g" %
                     args.regression_threshold)
    if not 0 < args.alpha < 1:
        parser.error("--alpha must be in (0, 1), got %g" % args.alpha)
    try:
        re.compile(args.filter)
    except re.error as e:
        parser.error("--filter %r is not a regular expression: %s" % (args.filter, e))
    return args


def from_user(path):
    """A path as the user typed it: relative to where they ran `bazel run`, not to runfiles."""
    if path is None or os.path.isabs(path):
        return path
    return os.path.join(os.environ.get("BUILD_WORKING_DIRECTORY") or os.getcwd(), path)


def load_baseline(path):
    """Reads a baseline report.json, or exits with what is wrong with it."""
    try:
        with open(path) as f:
            baseline = json.load(f)
    except OSError as e:
        sys.exit("report: --baseline %s cannot be read: %s" % (path, e.strerror))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        sys.exit("report: --baseline %s is not JSON: %s" % (path, e))
    if not isinstance(baseline, dict) or not isinstance(baseline.get("raw"), dict) or \
            not isinstance(baseline.get("machine"), dict):
        sys.exit("report: --baseline %s is not a report.json of this tool (it has no \"raw\" "
                 "and \"machine\" sections)" % path)
    return baseline


def default_out_dir():
    workspace = os.environ.get("BUILD_WORKSPACE_DIRECTORY") or os.getcwd()
    return os.path.join(workspace, "bazel-bin", "concurry_benchmark_report")


def run_suite(args, binaries, goals, root):
    """Runs the selected binaries; returns (binaries info, raw JSON per binary, settings)."""
    settings = dict(runner.MODES[args.mode])
    if args.repetitions is not None:
        settings["repetitions"] = args.repetitions
    if args.min_time is not None:
        settings["min_time"] = args.min_time
    env = dict(os.environ, RUNFILES_DIR=root)
    raw_dir = os.path.join(args.out, "raw")
    os.makedirs(raw_dir, exist_ok=True)
    planned, info, raws = [], {}, {}
    for entry in binaries:
        path = os.path.join(root, entry["path"])
        try:
            names = runner.list_benchmarks(path, args.filter, env)
        except RuntimeError as e:
            sys.stderr.write("report: %s\n" % e)
            info[entry["name"]] = {"exit_code": -1, "status": str(e), "seconds": 0,
                                   "benchmarks": 0, "log": "", "build": {}}
            continue
        if settings["goals_only"]:
            wanted = {b for g in goals if g.binary == entry["name"] for b in g.benchmarks()}
            # A binary's warm-up (BM_WarmUp, first in the binary) runs in every mode.
            names = [n for n in names if n in wanted or n.startswith(WARM_UP)]
        if names:
            planned.append((entry["name"], path, names, runner.exact_filter(names)))
    if not planned and not info:
        sys.exit("report: --filter %r matches no benchmark in %s (it is a POSIX extended regular "
                 "expression, as for --benchmark_filter)" %
                 (args.filter, ", ".join(b["name"] for b in binaries)))
    progress = runner.Progress(sum(len(p[2]) for p in planned) * settings["repetitions"])
    for index, (name, path, names, name_filter) in enumerate(planned):
        out_json = os.path.join(raw_dir, name + ".json")
        log = os.path.join(raw_dir, name + ".log")
        if os.path.exists(out_json):
            os.remove(out_json)
        label = "[%d/%d] %s" % (index + 1, len(planned), name)
        code, seconds = runner.run_binary(path, names, out_json, log, settings, name_filter, env,
                                          progress, label)
        raw = None
        if os.path.exists(out_json):
            with open(out_json) as f:
                try:
                    raw = json.load(f)
                except json.JSONDecodeError:
                    raw = None
        status = "ok" if code == 0 and raw is not None else (
            "timed out after %d s" % settings["timeout_s"] if code is None else
            "exit code %s%s" % (code, "" if raw is not None else ", no JSON output"))
        info[name] = {"exit_code": code if code is not None else -1, "status": status,
                      "seconds": round(seconds, 1), "benchmarks": len(names), "log": log,
                      "build": machine.build_context(raw) if raw else {}}
        if raw is not None:
            raws[name] = raw
        if status != "ok":
            with open(log, errors="replace") as f:
                tail = "".join(f.readlines()[-15:])
            sys.stderr.write("report: %s: %s; the last lines of %s:\n%s\n" % (
                name, status, log, tail))
    return info, raws, settings


def gate(report, baseline, baseline_path, args, goals):
    """Compares with a baseline report; returns the regression section of the report."""
    warnings = []
    for key in ("cpu_model", "cpus_usable"):
        if baseline["machine"].get(key) != report["machine"].get(key):
            warnings.append("the baseline ran on another machine (%s: %s, now %s): changes may "
                            "be the machine's" % (key, baseline["machine"].get(key),
                                                  report["machine"].get(key)))
    if baseline.get("mode") == "smoke" or report["mode"] == "smoke":
        warnings.append("a smoke run is not a measurement: compare quick or full runs")
    repetitions = min(report["settings"]["repetitions"],
                      baseline.get("settings", {}).get("repetitions", 0))
    if repetitions < 4:
        warnings.append("%d repetition(s): the U test cannot reach significance below 4 against "
                        "4, so no regression can be found" % repetitions)
    results = []
    for binary, raw in sorted(report["raw"].items()):
        if binary not in baseline["raw"]:
            warnings.append("%s is not in the baseline" % binary)
            continue
        for r in analysis.regressions(baseline["raw"][binary], raw, args.regression_threshold,
                                      args.alpha, goals.is_peer):
            r["binary"] = binary
            results.append(r)
    return {"baseline": baseline_path, "baseline_commit": baseline["machine"].get(
                "concurry_commit"), "threshold": args.regression_threshold, "alpha": args.alpha,
            "warnings": warnings, "results": results}


def failed_benchmarks(report):
    """(binary, benchmark, message) of every run that reported an error (SkipWithError)."""
    failed = {}
    for binary, raw in sorted(report["raw"].items()):
        for run in raw.get("benchmarks", []):
            if run.get("error_occurred"):
                failed.setdefault((binary, run["name"]), run.get("error_message", "?"))
    return [(b, n, m) for (b, n), m in failed.items()]


def main(argv):
    args = parse_args(argv)
    root = runner.runfiles_dir()
    goals_path = runner.resolve(root, args.goals)
    try:
        goals = goals_lib.load(goals_path)
    except goals_lib.GoalsError as e:
        sys.exit("report: %s" % e)
    binaries = []
    if not args.from_json:
        if not args.manifest:
            sys.exit("report: --manifest is missing: run the tool with bazel run //benchmarks:report")
        with open(runner.resolve(root, args.manifest)) as f:
            binaries = json.load(f)["binaries"]
    if args.binaries and not args.from_json:
        wanted = [b.strip() for b in args.binaries.split(",") if b.strip()]
        unknown = sorted(set(wanted) - {b["name"] for b in binaries})
        if unknown:
            sys.exit("report: unknown binaries %s; the suite has %s" % (
                ", ".join(unknown), ", ".join(b["name"] for b in binaries)))
        binaries = [b for b in binaries if b["name"] in wanted]
    if args.list:
        for b in binaries:
            print("%s\t%s" % (b["name"], len([g for g in goals if g.binary == b["name"]])))
        return 0
    args.out = os.path.abspath(from_user(args.out) or default_out_dir())
    os.makedirs(args.out, exist_ok=True)
    baseline_path = from_user(args.baseline)
    baseline = load_baseline(baseline_path) if baseline_path else None

    if args.from_json:
        with open(from_user(args.from_json)) as f:
            report = json.load(f)
        report.pop("regression", None)
    else:
        # goals.json is a symlink into concurry's checkout: its commit is the library's.
        source_dir = os.path.dirname(os.path.dirname(os.path.realpath(goals_path)))
        report = {"machine": machine.collect(source_dir), "mode": args.mode}
        info, raws, settings = run_suite(args, binaries, goals, root)
        report["machine"]["load_average_end"] = list(os.getloadavg())
        report.update(settings=settings, filter=args.filter, binaries=info, raw=raws)
        builds = [v["build"] for v in info.values() if v["build"]]
        report["build"] = builds[0] if builds else {}
    report["warnings"] = machine.build_warnings(report["binaries"])
    report["goals"] = [analysis.evaluate(g, report["raw"].get(g.binary)) for g in goals
                       if g.binary in report["binaries"]]
    if baseline is not None:
        report["regression"] = gate(report, baseline, baseline_path, args, goals)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    text = render.write_all(report, args.out)
    print(text)
    print("\nreport: wrote report.json, report.md, index.html and the charts to %s" % args.out)

    failed = sorted(k for k, v in report["binaries"].items() if v["exit_code"] != 0)
    errors = failed_benchmarks(report)
    regressed = [r for r in report.get("regression", {}).get("results", [])
                 if r["status"] == "regressed"]
    missed = [g for g in report["goals"] if g["verdict"] == analysis.MISSES]
    status = 0
    if failed:
        print("report: FAILED binaries: %s" % ", ".join(failed))
        status = 1
    if errors:
        print("report: FAILED benchmarks (SkipWithError):")
        for binary, name, message in errors:
            print("  %s %s: %s" % (binary, name, message))
        status = 1
    if regressed:
        print("report: REGRESSIONS against %s:" % baseline_path)
        for r in regressed:
            print("  %s %s: median time %+.1f%% (p = %.4f)" % (r["binary"], r["name"],
                                                              100 * r["change"], r["pvalue"]))
        status = 1
    if missed and report["mode"] != "smoke":
        print("report: %d goal(s) missed: %s" % (len(missed), "; ".join(
            "%s / %s" % (g["component"], g["metric"]) for g in missed)))
        if args.strict_goals:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
