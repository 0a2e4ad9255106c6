"""Every benchmark binary is in the suite, and every goal names a benchmark that exists.

Arguments (from concurry_benchmark_suite() in benchmarks/benchmark.bzl):
  --goals=PATH              goals.json
  --benchmark=NAME=PATH     each concurry_benchmark() binary of the package
  --cc_binary=NAME          each cc_binary of the package, in the suite or not
"""

import argparse
import subprocess
import sys
import unittest

from reporting import goals as goals_lib

ARGS = None


class ConventionTest(unittest.TestCase):

    def test_every_binary_of_the_package_is_a_concurry_benchmark(self):
        outside = sorted(set(ARGS.cc_binary) - set(ARGS.benchmarks))
        self.assertEqual(outside, [], "cc_binary targets of //benchmarks outside the suite's "
                         "convention: declare them with concurry_benchmark() (benchmark.bzl) so "
                         "the report and CI run them: %s" % ", ".join(outside))

    def test_every_goal_names_existing_benchmarks(self):
        goals = goals_lib.load(ARGS.goals)
        listed = {}
        for name, path in ARGS.benchmarks.items():
            out = subprocess.run([path, "--benchmark_list_tests"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, timeout=60, check=False)
            self.assertEqual(out.returncode, 0, "%s --benchmark_list_tests: %s" % (name,
                                                                                    out.stderr))
            listed[name] = set(out.stdout.split())
        problems = []
        for goal in goals:
            if goal.binary not in listed:
                problems.append("%s / %s: no binary %s" % (goal.component, goal.metric,
                                                           goal.binary))
                continue
            for benchmark in goal.benchmarks():
                if benchmark not in listed[goal.binary]:
                    problems.append("%s / %s: %s has no benchmark %s" % (
                        goal.component, goal.metric, goal.binary, benchmark))
            for benchmark in (goal.peer, goal.floor):
                if benchmark and not goals.is_peer(benchmark):
                    problems.append("%s / %s: %s is not matched by peer_benchmarks" % (
                        goal.component, goal.metric, benchmark))
            if goals.is_peer(goal.concurry):
                problems.append("%s / %s: concurry's %s is matched by peer_benchmarks" % (
                    goal.component, goal.metric, goal.concurry))
        self.assertEqual(problems, [], "goals.json names benchmarks that do not exist or are "
                         "misclassified:\n  " +
                         "\n  ".join(problems))

    def test_every_binary_has_a_goal(self):
        goals = goals_lib.load(ARGS.goals)
        without = sorted(set(ARGS.benchmarks) - {g.binary for g in goals})
        self.assertEqual(without, [], "benchmark binaries without any goal in goals.json (a "
                         "binary of the suite compares concurry with a peer): %s" %
                         ", ".join(without))


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--goals", required=True)
    parser.add_argument("--benchmark", action="append", default=[])
    parser.add_argument("--cc_binary", action="append", default=[])
    ARGS, rest = parser.parse_known_args()
    ARGS.benchmarks = dict(b.split("=", 1) for b in ARGS.benchmark)
    unittest.main(argv=[sys.argv[0]] + rest)


if __name__ == "__main__":
    main()
