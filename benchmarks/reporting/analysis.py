"""Numbers out of Google Benchmark JSON: samples per benchmark, goal verdicts, regressions.

A "raw" document is one binary's --benchmark_out JSON. Only its iteration runs are read (one per
repetition); the aggregates Google Benchmark adds are recomputed here from them, so a report has
the same statistics whatever flags the binary ran with.
"""

import statistics

TIME_FIELDS = ("real_time", "cpu_time")
_SECONDS_PER_UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}

MEETS = "meets goal"
MISSES = "misses goal"
NOISY = "noisy"
NOT_RUN = "not run"


def iteration_runs(raw, name):
    """The per-repetition runs of benchmark `name` in one binary's JSON, in order."""
    return [b for b in raw.get("benchmarks", [])
            if b.get("name") == name and b.get("run_type", "iteration") == "iteration"]


def field_value(run, field):
    """The value of `field` in one run; times in seconds. None when the run lacks it."""
    if field in TIME_FIELDS:
        if field not in run:
            return None
        return run[field] * _SECONDS_PER_UNIT[run.get("time_unit", "ns")]
    value = run.get(field)
    return float(value) if isinstance(value, (int, float)) else None


def quantile(sorted_values, q):
    """Linear-interpolated quantile q in [0, 1] of an ascending list."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


class Samples:
    """One benchmark's values of one field across repetitions, or why there are none."""

    def __init__(self, values=(), error=None):
        self.values = sorted(values)
        self.error = error if error or values else "no runs"

    @classmethod
    def of(cls, raw, name, field):
        if raw is None:
            return cls(error="its binary did not run")
        runs = iteration_runs(raw, name)
        if not runs:
            return cls(error="%s is not in this run" % name)
        failed = [r for r in runs if r.get("error_occurred")]
        if failed:
            return cls(error="%s failed: %s" % (name, failed[0].get("error_message", "?")))
        values = [field_value(r, field) for r in runs]
        if any(v is None for v in values):
            return cls(error="%s has no field %r" % (name, field))
        return cls(values)

    @property
    def ok(self):
        return not self.error

    @property
    def median(self):
        return statistics.median(self.values)

    @property
    def q25(self):
        return quantile(self.values, 0.25)

    @property
    def q75(self):
        return quantile(self.values, 0.75)

    def to_json(self):
        if not self.ok:
            return {"error": self.error}
        return {"n": len(self.values), "median": self.median, "q25": self.q25, "q75": self.q75,
                "min": self.values[0], "max": self.values[-1], "values": self.values}


def _satisfies(value, bound, direction):
    return value <= bound if direction == "time" else value >= bound


def _classify(low, high, bound, direction):
    """MEETS when the whole interval [low, high] satisfies the bound, MISSES when none does."""
    meets_low, meets_high = _satisfies(low, bound, direction), _satisfies(high, bound, direction)
    if meets_low and meets_high:
        return MEETS
    if not meets_low and not meets_high:
        return MISSES
    return NOISY


def evaluate(goal, raw):
    """The verdict of one Goal on its binary's JSON (None when the binary did not run).

    The ratio is of medians, concurry / peer. Its spread is the ratio of the interquartile ends
    that lie furthest apart (q25 over the other's q75 and the reverse), which contains the median
    ratio. The verdict is MEETS when both spread ends meet the goal, MISSES when neither does,
    NOISY in between; the absolute bound, where there is one, is judged the same way on concurry's own
    quartiles and both must meet. With one repetition the spread is a point.
    """
    concurry = Samples.of(raw, goal.concurry, goal.field)
    peer = Samples.of(raw, goal.peer, goal.field)
    floor = Samples.of(raw, goal.floor, goal.field) if goal.floor else None
    result = {
        "component": goal.component, "metric": goal.metric, "binary": goal.binary,
        "concurry": goal.concurry, "peer": goal.peer, "peer_label": goal.peer_label,
        "field": goal.field, "direction": goal.direction, "goal": goal.goal,
        "goal_text": goal.goal_text(), "absolute": goal.absolute, "floor": goal.floor,
        "note": goal.note, "concurry_samples": concurry.to_json(), "peer_samples": peer.to_json(),
        "floor_samples": floor.to_json() if floor else None,
        "ratio": None, "ratio_low": None, "ratio_high": None, "floor_ratio": None,
    }
    missing = [s.error for s in (concurry, peer) if not s.ok]
    if not missing and min(peer.values) <= 0:
        missing = ["%s has a value of %g: no ratio" % (goal.peer, min(peer.values))]
    if missing:
        result.update(verdict=NOT_RUN, reason="; ".join(missing))
        return result
    ratio = concurry.median / peer.median
    low, high = concurry.q25 / peer.q75, concurry.q75 / peer.q25
    result.update(ratio=ratio, ratio_low=low, ratio_high=high)
    if floor and floor.ok:
        result["floor_ratio"] = concurry.median / floor.median
    verdict = _classify(low, high, goal.goal, goal.direction)
    reason = "ratio %.3g (spread %.3g-%.3g), goal %s" % (ratio, low, high, goal.goal_text())
    if goal.absolute is not None:
        absolute = _classify(concurry.q25, concurry.q75, goal.absolute, goal.direction)
        reason += "; value %.4g, bound %s %.4g" % (
            concurry.median, "<=" if goal.direction == "time" else ">=", goal.absolute)
        if MISSES in (verdict, absolute):
            verdict = MISSES
        elif NOISY in (verdict, absolute):
            verdict = NOISY
    result.update(verdict=verdict, reason=reason)
    return result


def regressions(baseline_raw, current_raw, threshold, alpha, is_peer=lambda name: False):
    """Compares two runs of one binary with Google Benchmark's compare.py library (gbench).

    For each benchmark in both runs: the change of the median real time (new / old - 1) and the
    two-sided Mann-Whitney U test's p-value over the repetitions, as compare.py computes them. A
    benchmark regressed when it got slower by more than `threshold` (0.1 = 10%) with p < alpha;
    it improved in the mirror case. Peer benchmarks (is_peer(name), from goals.json's
    peer_benchmarks) are reported but never counted as a regression of concurry: a slower peer
    means a slower machine. Returns a list of dicts (name, change, pvalue, repetitions, status) in
    the binary's order, status one of "regressed", "improved", "unchanged", "peer", "too few
    repetitions", and "not in this run" for a benchmark of the baseline the run lacks.
    """
    from gbench import report as gbench_report  # scipy is needed only for this.

    def iterations(raw):
        return {"benchmarks": [b for b in raw.get("benchmarks", [])
                               if b.get("run_type", "iteration") == "iteration" and
                               not b.get("error_occurred")]}

    old, new = iterations(baseline_raw), iterations(current_raw)
    results = []
    for entry in gbench_report.get_difference_report(old, new, utest=True):
        name = entry["name"]
        if name == "OVERALL_GEOMEAN":
            continue
        # get_difference_report pairs repetitions; the medians use every one of each side.
        old_times = [b["real_time"] for b in old["benchmarks"] if b["name"] == name]
        new_times = [b["real_time"] for b in new["benchmarks"] if b["name"] == name]
        if statistics.median(old_times) <= 0:
            continue
        change = statistics.median(new_times) / statistics.median(old_times) - 1.0
        utest = entry.get("utest") or {}
        pvalue = utest.get("time_pvalue")
        if pvalue is None:
            status = "too few repetitions"
        elif pvalue >= alpha or abs(change) <= threshold:
            status = "unchanged"
        elif is_peer(name):
            status = "peer"
        else:
            status = "regressed" if change > 0 else "improved"
        results.append({"name": name, "change": change, "pvalue": pvalue,
                        "repetitions": [len(old_times), len(new_times)], "status": status})
    compared = {r["name"] for r in results}
    for name in dict.fromkeys(b["name"] for b in old["benchmarks"]):
        if name not in compared and not any(b["name"] == name for b in new["benchmarks"]):
            results.append({"name": name, "change": None, "pvalue": None,
                            "repetitions": [0, 0], "status": "not in this run"})
    return results
