"""Goals: which concurry benchmark is compared with which peer, on what metric, with what goal.

benchmarks/goals.json is the one place these pairs live. Each entry:

  component   the report's section (futures, sync, workers, limits, ...)
  metric      what a reader compares, in words
  binary      the benchmark binary both benchmarks are in (peers share the binary, so the two
              figures come from the same run)
  concurry    the concurry benchmark's full name as the binary lists it
  peer        the peer benchmark's full name; peer_label names the peer for readers
  field       real_time or cpu_time (seconds per iteration), or a counter of the run
              (items_per_second, p50_us, ...)
  direction   "time" (lower is better) or "throughput" (higher is better)
  goal        the ratio concurry / peer must be <= goal for "time", >= goal for "throughput"
  floor       optional: a benchmark in the same binary that measures the physical floor of the
              metric on this machine (a pipe round trip, a mutex+condvar hand-off); shown beside
  absolute    optional: a bound on concurry's own value in the field's unit (<= for time,
              >= for throughput), for goals stated as a figure ("<= 40 ns")
  note        optional: one line for readers

Beside the goals, "peer_benchmarks" lists regular expressions (Python re, searched in the name)
that match every peer benchmark of the suite, named in a goal or not: the regression gate never
counts a peer's slowdown as concurry's.
"""

import json
import re

DIRECTIONS = ("time", "throughput")
_REQUIRED = ("component", "metric", "binary", "concurry", "peer", "peer_label", "field",
             "direction", "goal")
_OPTIONAL = ("floor", "absolute", "note")


class GoalsError(ValueError):
    """goals.json is malformed; the message names the entry and the field."""


class Goal:
    """One validated entry of goals.json."""

    def __init__(self, entry, index):
        where = "goals.json entry %d" % index
        if not isinstance(entry, dict):
            raise GoalsError("%s: expected an object, got %s" % (where, type(entry).__name__))
        if "metric" in entry:
            where += " (%r)" % entry["metric"]
        unknown = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL))
        if unknown:
            raise GoalsError("%s: unknown field(s) %s; the fields are %s" %
                             (where, ", ".join(unknown), ", ".join(_REQUIRED + _OPTIONAL)))
        missing = [k for k in _REQUIRED if k not in entry]
        if missing:
            raise GoalsError("%s: missing field(s) %s" % (where, ", ".join(missing)))
        for key in ("component", "metric", "binary", "concurry", "peer", "peer_label", "field"):
            if not isinstance(entry[key], str) or not entry[key]:
                raise GoalsError("%s: %s must be a non-empty string, got %r" %
                                 (where, key, entry[key]))
        if entry["direction"] not in DIRECTIONS:
            raise GoalsError("%s: direction must be one of %s, got %r" %
                             (where, ", ".join(DIRECTIONS), entry["direction"]))
        for key in ("goal", "absolute"):
            value = entry.get(key)
            if value is None and key == "absolute":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise GoalsError("%s: %s must be a positive number, got %r" % (where, key, value))
        field, direction = entry["field"], entry["direction"]
        if field in ("real_time", "cpu_time") and direction != "time":
            raise GoalsError("%s: field %s is a time per iteration: direction must be \"time\"" %
                             (where, field))
        if (field.endswith("per_second") or field.endswith("_per_s")) and direction != "throughput":
            raise GoalsError("%s: field %s is a rate: direction must be \"throughput\"" %
                             (where, field))
        floor = entry.get("floor")
        if floor is not None and (not isinstance(floor, str) or not floor):
            raise GoalsError("%s: floor must be a benchmark name, got %r" % (where, floor))
        if entry["concurry"] == entry["peer"]:
            raise GoalsError("%s: concurry and peer are the same benchmark %r" %
                             (where, entry["peer"]))
        self.component = entry["component"]
        self.metric = entry["metric"]
        self.binary = entry["binary"]
        self.concurry = entry["concurry"]
        self.peer = entry["peer"]
        self.peer_label = entry["peer_label"]
        self.field = entry["field"]
        self.direction = entry["direction"]
        self.goal = float(entry["goal"])
        self.floor = floor
        self.absolute = float(entry["absolute"]) if entry.get("absolute") is not None else None
        self.note = entry.get("note", "")

    def benchmarks(self):
        """The benchmark names this goal reads (concurry, peer, floor)."""
        return [b for b in (self.concurry, self.peer, self.floor) if b]

    def goal_text(self):
        """The goal as a reader writes it: "≤ 1× peer" or "≥ 0.8× peer"."""
        op = "≤" if self.direction == "time" else "≥"
        return "%s %g× peer" % (op, self.goal)


class Goals(list):
    """The goals in file order, and the patterns that tell peer benchmarks apart."""

    def __init__(self, goals, peer_patterns):
        super().__init__(goals)
        self.peer_patterns = peer_patterns

    def is_peer(self, name):
        return any(p.search(name) for p in self.peer_patterns)


def parse(document):
    """Validates a goals document (the parsed JSON) and returns its Goals in order."""
    if not isinstance(document, dict) or not isinstance(document.get("goals"), list):
        raise GoalsError('goals.json must be an object with a "goals" list')
    patterns = document.get("peer_benchmarks", [])
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
        raise GoalsError('goals.json: "peer_benchmarks" must be a list of regular expressions')
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as e:
            raise GoalsError("goals.json: peer_benchmarks %r is not a regular expression: %s" %
                             (pattern, e)) from e
    goals = Goals([Goal(entry, i) for i, entry in enumerate(document["goals"])], compiled)
    seen = set()
    for goal in goals:
        key = (goal.component, goal.metric)
        if key in seen:
            raise GoalsError("goals.json: %s / %r appears twice" % key)
        seen.add(key)
    return goals


def load(path):
    """Reads and validates goals.json."""
    try:
        with open(path) as f:
            document = json.load(f)
    except json.JSONDecodeError as e:
        raise GoalsError("%s is not valid JSON: %s" % (path, e)) from e
    return parse(document)
