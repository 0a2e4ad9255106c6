"""Tests of the report's logic on fixture JSON: goals, ratios, verdicts, the regression gate.

testdata/run.json is a report of one fake binary, demo_benchmark, with 5 repetitions per
benchmark (times in ns):
  BM_Ours   100 102 104 106 108      BM_Peer  200 204 208 212 216     BM_Floor 50 (x5)
  BM_Noisy  150 190 200 210 250      BM_Slow  300 310 320 330 340
testdata/goals.json names BM_Peer and BM_Floor peers (peer_benchmarks).
testdata/baseline_faster.json is the same run with BM_Ours at 80-84 ns and BM_Peer at 150-154 ns:
against it, run.json's BM_Ours regressed by 104/82 - 1 and its peer slowed down.
"""

import contextlib
import io
import json
import os
import tempfile
import unittest
import xml.etree.ElementTree as ElementTree

from reporting import analysis
from reporting import goals as goals_lib
from reporting import main as report_main

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")
# The suite's own goals.json (a data dependency of this test).
SUITE_GOALS = os.path.join(os.path.dirname(HERE), "..", "goals.json")


def load(name):
    with open(os.path.join(HERE, name)) as f:
        return json.load(f)


def demo_goals():
    return goals_lib.load(os.path.join(HERE, "goals.json"))


def evaluate_all():
    raw = load("run.json")["raw"]["demo_benchmark"]
    return {g.metric: analysis.evaluate(g, raw) for g in demo_goals()}


def with_failed_benchmark(report):
    """The fixture run with BM_Ours's repetitions reported as errors (SkipWithError)."""
    for run in report["raw"]["demo_benchmark"]["benchmarks"]:
        if run["name"] == "BM_Ours":
            run.update(error_occurred=True, error_message="boom")
    return report


class GoalsTest(unittest.TestCase):

    def entry(self, **changes):
        entry = {"component": "c", "metric": "m", "binary": "b", "concurry": "BM_A",
                 "peer": "BM_B", "peer_label": "p", "field": "real_time", "direction": "time",
                 "goal": 1.0}
        entry.update(changes)
        return {k: v for k, v in entry.items() if v is not None}

    def assert_error(self, document, message):
        with self.assertRaises(goals_lib.GoalsError) as caught:
            goals_lib.parse(document)
        self.assertEqual(str(caught.exception), message)

    def test_the_suite_goals_parse_and_tell_peers_apart(self):
        goals = goals_lib.load(SUITE_GOALS)
        self.assertGreater(len(goals), 20)
        self.assertEqual(len({(g.component, g.metric) for g in goals}), len(goals))
        for goal in goals:
            self.assertTrue(goals.is_peer(goal.peer), goal.peer)
            self.assertFalse(goals.is_peer(goal.concurry), goal.concurry)
            if goal.floor:
                self.assertTrue(goals.is_peer(goal.floor), goal.floor)

    def test_errors_name_the_entry_and_the_field(self):
        self.assert_error([], 'goals.json must be an object with a "goals" list')
        self.assert_error({"goals": [self.entry(direction="up")]},
                          "goals.json entry 0 ('m'): direction must be one of time, throughput, "
                          "got 'up'")
        self.assert_error({"goals": [self.entry(goal=0)]},
                          "goals.json entry 0 ('m'): goal must be a positive number, got 0")
        self.assert_error({"goals": [self.entry(goal=True)]},
                          "goals.json entry 0 ('m'): goal must be a positive number, got True")
        self.assert_error({"goals": [self.entry(absolute=-1)]},
                          "goals.json entry 0 ('m'): absolute must be a positive number, got -1")
        self.assert_error({"goals": [self.entry(peer=None)]},
                          "goals.json entry 0 ('m'): missing field(s) peer")
        self.assert_error({"goals": [self.entry(colour="red")]},
                          "goals.json entry 0 ('m'): unknown field(s) colour; the fields are "
                          "component, metric, binary, concurry, peer, peer_label, field, "
                          "direction, goal, floor, absolute, note")
        self.assert_error({"goals": [self.entry(peer="BM_A")]},
                          "goals.json entry 0 ('m'): concurry and peer are the same benchmark "
                          "'BM_A'")
        self.assert_error({"goals": [self.entry(), self.entry()]},
                          "goals.json: c / 'm' appears twice")
        self.assert_error({"goals": [self.entry(binary="")]},
                          "goals.json entry 0 ('m'): binary must be a non-empty string, got ''")
        self.assert_error({"goals": [self.entry(direction="throughput")]},
                          "goals.json entry 0 ('m'): field real_time is a time per iteration: "
                          'direction must be "time"')
        self.assert_error({"goals": [self.entry(field="items_per_second")]},
                          "goals.json entry 0 ('m'): field items_per_second is a rate: direction "
                          'must be "throughput"')
        self.assert_error({"goals": [], "peer_benchmarks": ["("]},
                          "goals.json: peer_benchmarks '(' is not a regular expression: missing ), "
                          "unterminated subpattern at position 0")


class EvaluateTest(unittest.TestCase):

    def test_ratio_of_medians_and_interquartile_spread(self):
        result = evaluate_all()["clearly faster"]
        self.assertAlmostEqual(result["ratio"], 104 / 208, places=12)
        self.assertAlmostEqual(result["ratio_low"], 102 / 212, places=12)
        self.assertAlmostEqual(result["ratio_high"], 106 / 204, places=12)
        self.assertAlmostEqual(result["floor_ratio"], 104 / 50, places=12)
        self.assertEqual(result["verdict"], analysis.MEETS)
        self.assertEqual(result["concurry_samples"]["n"], 5)
        self.assertAlmostEqual(result["concurry_samples"]["median"], 104e-9, places=18)

    def test_a_spread_that_straddles_the_goal_is_noisy(self):
        result = evaluate_all()["noisy"]
        self.assertAlmostEqual(result["ratio"], 200 / 208, places=12)
        self.assertAlmostEqual(result["ratio_low"], 190 / 212, places=12)
        self.assertAlmostEqual(result["ratio_high"], 210 / 204, places=12)
        self.assertEqual(result["verdict"], analysis.NOISY)

    def test_a_clearly_slower_benchmark_misses(self):
        result = evaluate_all()["clearly slower"]
        self.assertAlmostEqual(result["ratio"], 320 / 208, places=12)
        self.assertEqual(result["verdict"], analysis.MISSES)

    def test_throughput_ratios_are_judged_upwards(self):
        result = evaluate_all()["throughput"]
        self.assertAlmostEqual(result["ratio"], 208 / 104, places=12)
        self.assertAlmostEqual(result["ratio_low"], 204 / 106, places=12)
        self.assertAlmostEqual(result["ratio_high"], 212 / 102, places=12)
        self.assertEqual(result["goal_text"], "≥ 1.5× peer")
        self.assertEqual(result["verdict"], analysis.MEETS)

    def test_absolute_bounds(self):
        # The ratio meets its goal; concurry's quartiles (102, 106 ns) straddle 105 ns.
        self.assertEqual(evaluate_all()["absolute bound inside the spread"]["verdict"],
                         analysis.NOISY)
        self.assertEqual(evaluate_all()["absolute bound met"]["verdict"], analysis.MEETS)

    def test_a_missing_peer_or_a_failed_benchmark_is_not_run_with_the_reason(self):
        missing = evaluate_all()["missing peer"]
        self.assertEqual(missing["verdict"], analysis.NOT_RUN)
        self.assertEqual(missing["reason"], "BM_Absent is not in this run")
        self.assertIsNone(missing["ratio"])
        raw = with_failed_benchmark(load("run.json"))["raw"]["demo_benchmark"]
        failed = analysis.evaluate(demo_goals()[0], raw)
        self.assertEqual(failed["verdict"], analysis.NOT_RUN)
        self.assertEqual(failed["reason"], "BM_Ours failed: boom")

    def test_a_peer_of_zero_gives_no_ratio(self):
        report = load("run.json")
        for run in report["raw"]["demo_benchmark"]["benchmarks"]:
            if run["name"] == "BM_Peer":
                run["real_time"] = 0
        result = analysis.evaluate(demo_goals()[0], report["raw"]["demo_benchmark"])
        self.assertEqual(result["verdict"], analysis.NOT_RUN)
        self.assertEqual(result["reason"], "BM_Peer has a value of 0: no ratio")

    def test_a_binary_that_did_not_run(self):
        goal = demo_goals()[0]
        result = analysis.evaluate(goal, None)
        self.assertEqual(result["verdict"], analysis.NOT_RUN)
        self.assertEqual(result["reason"], "its binary did not run; its binary did not run")

    def test_a_missing_field(self):
        goal = goals_lib.Goal({"component": "c", "metric": "m", "binary": "demo_benchmark",
                               "concurry": "BM_Ours", "peer": "BM_Peer", "peer_label": "p",
                               "field": "p50_us", "direction": "time", "goal": 1}, 0)
        result = analysis.evaluate(goal, load("run.json")["raw"]["demo_benchmark"])
        self.assertEqual(result["reason"], "BM_Ours has no field 'p50_us'; BM_Peer has no field "
                                           "'p50_us'")


class RegressionTest(unittest.TestCase):

    def test_the_same_run_as_baseline_changes_nothing(self):
        raw = load("run.json")["raw"]["demo_benchmark"]
        results = analysis.regressions(raw, raw, 0.10, 0.05, demo_goals().is_peer)
        self.assertEqual({r["name"]: r["status"] for r in results},
                         {"BM_Ours": "unchanged", "BM_Peer": "unchanged",
                          "BM_Floor": "unchanged", "BM_Noisy": "unchanged",
                          "BM_Slow": "unchanged"})
        self.assertEqual({r["change"] for r in results}, {0.0})

    def test_a_slower_run_regresses_and_a_slower_peer_is_not_ours(self):
        baseline = load("baseline_faster.json")["raw"]["demo_benchmark"]
        raw = load("run.json")["raw"]["demo_benchmark"]
        results = {r["name"]: r for r in analysis.regressions(baseline, raw, 0.10, 0.05,
                                                               demo_goals().is_peer)}
        ours = results["BM_Ours"]
        self.assertEqual(ours["status"], "regressed")
        self.assertAlmostEqual(ours["change"], 104 / 82 - 1, places=12)
        # Mann-Whitney U, two-sided, exact: 5 against 5 fully separated is 2 / C(10, 5).
        self.assertAlmostEqual(ours["pvalue"], 2 / 252, places=9)
        self.assertEqual(ours["repetitions"], [5, 5])
        self.assertEqual(results["BM_Peer"]["status"], "peer")
        self.assertEqual(results["BM_Floor"]["status"], "unchanged")
        self.assertEqual(results["BM_Slow"]["status"], "unchanged")
        # The same run read the other way round is an improvement.
        back = {r["name"]: r for r in analysis.regressions(raw, baseline, 0.10, 0.05)}
        self.assertEqual(back["BM_Ours"]["status"], "improved")

    def test_a_benchmark_missing_from_the_run_is_listed(self):
        baseline = load("run.json")["raw"]["demo_benchmark"]
        raw = load("run.json")["raw"]["demo_benchmark"]
        raw["benchmarks"] = [b for b in raw["benchmarks"] if b["name"] != "BM_Slow"]
        results = {r["name"]: r["status"] for r in analysis.regressions(baseline, raw, 0.1, 0.05)}
        self.assertEqual(results["BM_Slow"], "not in this run")

    def test_a_change_below_the_threshold_is_not_a_regression(self):
        baseline = load("baseline_faster.json")["raw"]["demo_benchmark"]
        raw = load("run.json")["raw"]["demo_benchmark"]
        results = {r["name"]: r for r in analysis.regressions(baseline, raw, 0.30, 0.05)}
        self.assertEqual(results["BM_Ours"]["status"], "unchanged")


class EndToEndTest(unittest.TestCase):
    """main() re-rendering the fixture run (--from-json): outputs, exit status, gate."""

    def run_main(self, *args, run=os.path.join(HERE, "run.json")):
        out = tempfile.mkdtemp()
        argv = ["--goals=" + os.path.join(HERE, "goals.json"), "--from-json=" + run,
                "--out=" + out] + list(args)
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            status = report_main.main(argv)
        return status, out, stdout.getvalue()

    def test_outputs_exist_and_parse(self):
        status, out, text = self.run_main()
        self.assertEqual(status, 0)
        with open(os.path.join(out, "report.json")) as f:
            report = json.load(f)
        self.assertEqual([g["verdict"] for g in report["goals"]],
                         [analysis.MEETS, analysis.NOISY, analysis.MISSES, analysis.MEETS,
                          analysis.NOISY, analysis.MEETS, analysis.NOT_RUN])
        with open(os.path.join(out, "report.md")) as f:
            markdown = f.read()
        self.assertIn("| clearly slower | 320 ns | the peer: 208 ns |  | 1.54× (1.46–1.62) | "
                      "≤ 1× peer | MISSES |", markdown)
        self.assertIn(markdown.strip(), text)
        svg = ElementTree.parse(os.path.join(out, "demo.svg")).getroot()
        self.assertTrue(svg.tag.endswith("svg"))
        with open(os.path.join(out, "index.html")) as f:
            page = f.read()
        self.assertIn('<img src="demo.svg"', page)
        self.assertEqual(page.count("<tr>"), 10 + 1 + 7)  # context rows, header, goals

    def test_strict_goals_fail_on_a_missed_goal(self):
        status, _, text = self.run_main("--strict-goals")
        self.assertEqual(status, 1)
        self.assertIn("report: 1 goal(s) missed: demo / clearly slower", text)

    def test_the_gate_fails_on_a_regression_and_names_it(self):
        status, out, text = self.run_main(
            "--baseline=" + os.path.join(HERE, "baseline_faster.json"))
        self.assertEqual(status, 1)
        self.assertIn("report: REGRESSIONS against", text)
        self.assertIn("  demo_benchmark BM_Ours: median time +26.8% (p = 0.0079)", text)
        self.assertNotIn("BM_Peer: median time", text)
        with open(os.path.join(out, "report.json")) as f:
            regression = json.load(f)["regression"]
        self.assertEqual(sorted((r["name"], r["status"]) for r in regression["results"]
                                if r["status"] != "unchanged"),
                         [("BM_Ours", "regressed"), ("BM_Peer", "peer")])

    def test_the_gate_passes_on_a_baseline_equal_to_the_run(self):
        status, _, text = self.run_main("--baseline=" + os.path.join(HERE, "run.json"))
        self.assertEqual(status, 0)
        self.assertIn("No benchmark changed beyond the threshold with significance.", text)

    def test_a_failed_benchmark_fails_the_run(self):
        path = os.path.join(tempfile.mkdtemp(), "failed.json")
        with open(path, "w") as f:
            json.dump(with_failed_benchmark(load("run.json")), f)
        status, _, text = self.run_main(run=path)
        self.assertEqual(status, 1)
        self.assertIn("report: FAILED benchmarks (SkipWithError):\n  demo_benchmark BM_Ours: boom",
                      text)

    def test_relative_paths_are_the_users(self):
        os.environ["BUILD_WORKING_DIRECTORY"] = HERE
        try:
            status, _, text = self.run_main("--baseline=run.json")
        finally:
            del os.environ["BUILD_WORKING_DIRECTORY"]
        self.assertEqual(status, 0)
        self.assertIn("Baseline %s" % os.path.join(HERE, "run.json"), text)

    def test_a_missing_baseline_is_named(self):
        with self.assertRaises(SystemExit) as caught:
            self.run_main("--baseline=/nonexistent/report.json")
        self.assertEqual(str(caught.exception), "report: --baseline /nonexistent/report.json "
                                                "cannot be read: No such file or directory")

    def test_a_baseline_that_is_not_a_report(self):
        path = os.path.join(tempfile.mkdtemp(), "other.json")
        with open(path, "w") as f:
            json.dump({"benchmarks": []}, f)
        with self.assertRaises(SystemExit) as caught:
            self.run_main("--baseline=" + path)
        self.assertIn("is not a report.json of this tool", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
