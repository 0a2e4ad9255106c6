"""A report's outputs: report.md, one SVG chart per component, index.html."""

import html
import os
import tempfile

from reporting import analysis

_VERDICT_MARK = {analysis.MEETS: "meets", analysis.MISSES: "MISSES", analysis.NOISY: "noisy",
                 analysis.NOT_RUN: "not run"}


def _scaled(value, units):
    for factor, suffix in units:
        if abs(value) >= factor:
            return "%.3g %s" % (value / factor, suffix)
    factor, suffix = units[-1]
    return "%.3g %s" % (value / factor, suffix)


def format_value(value, field):
    """A field's value with its unit: times in s/ms/us/ns, rates with k/M, counters as named."""
    if value is None:
        return "-"
    if field.endswith("per_second") or field.endswith("_per_s"):
        return _scaled(value, [(1e9, "G/s"), (1e6, "M/s"), (1e3, "k/s"), (1, "/s")])
    if field in analysis.TIME_FIELDS or field.endswith("_s"):
        return _scaled(value, [(1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")])
    if field.endswith("_ms"):
        return _scaled(value, [(1e3, "s"), (1, "ms"), (1e-3, "µs")])
    if field.endswith("_us"):
        return _scaled(value, [(1e6, "s"), (1e3, "ms"), (1, "µs"), (1e-3, "ns")])
    if "bytes" in field:
        return _scaled(value, [(2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B")])
    return "%.4g" % value


def _median(samples):
    return samples.get("median") if samples else None


def components(results):
    """Goal results grouped by component, in goals.json order."""
    grouped = {}
    for result in results:
        grouped.setdefault(result["component"], []).append(result)
    return grouped


def _ratio_text(result):
    if result["ratio"] is None:
        return "-"
    return "%.2f× (%.2f–%.2f)" % (result["ratio"], result["ratio_low"], result["ratio_high"])


def _verdict_text(result, measured):
    verdict = _VERDICT_MARK[result["verdict"]]
    if result["verdict"] == analysis.NOT_RUN:
        return "not run: " + result.get("reason", "")
    return verdict if measured else verdict + " (smoke: not a measurement)"


def table_rows(result, measured):
    """The cells of one goal's row: metric, concurry, peer, floor, ratio, goal, verdict."""
    field = result["field"]
    floor = _median(result["floor_samples"])
    return [
        result["metric"],
        format_value(_median(result["concurry_samples"]), field),
        "%s: %s" % (result["peer_label"], format_value(_median(result["peer_samples"]), field)),
        format_value(floor, field) if result["floor"] else "",
        _ratio_text(result),
        result["goal_text"] + ("; concurry %s %s" % (
            "≤" if result["direction"] == "time" else "≥", format_value(result["absolute"], field))
            if result["absolute"] is not None else ""),
        _verdict_text(result, measured),
    ]


HEADER = ["Metric", "concurry", "Peer", "Floor", "Ratio (spread)", "Goal", "Verdict"]


def markdown(report):
    """report.md: the context, then a table per component, then the regression gate."""
    measured = report["mode"] != "smoke"
    context = report["machine"]
    lines = ["# concurry-cpp benchmark report", "",
             "Mode `%s` (%d repetition(s) of each benchmark, min time %g s), %s on %s "
             "(%d CPUs usable, load %.2f at start), commit %s." % (
                 report["mode"], report["settings"]["repetitions"],
                 report["settings"]["min_time"], context["date"], context["cpu_model"],
                 context["cpus_usable"], context["load_average_start"][0],
                 context.get("concurry_commit") or "unknown"),
             "",
             "Ratio: concurry / peer, medians of the same run; spread: the interquartile ends. "
             "Time rows: lower is better; throughput rows: higher is better.", ""]
    if not measured:
        lines += ["**Smoke mode: each benchmark ran once for a moment; the figures only show "
                  "that it runs.**", ""]
    for warning in report["warnings"]:
        lines.append("- **Warning:** " + warning)
    if report["warnings"]:
        lines.append("")
    for component, results in components(report["goals"]).items():
        lines += ["## " + component, "", "| " + " | ".join(HEADER) + " |",
                  "|" + "---|" * len(HEADER)]
        for result in results:
            cells = [c.replace("|", "\\|") for c in table_rows(result, measured)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += regression_markdown(report.get("regression"))
    failed = {k: v for k, v in report["binaries"].items() if v["exit_code"] != 0}
    if failed:
        lines += ["## Binaries that failed", ""]
        for name, info in sorted(failed.items()):
            lines.append("- %s: %s (log: %s)" % (name, info["status"], info["log"]))
        lines.append("")
    return "\n".join(lines)


def regression_markdown(regression):
    if not regression:
        return []
    lines = ["## Against the baseline", "",
             "Baseline %s (commit %s). Threshold %g%%, U test alpha %g." % (
                 regression["baseline"], regression["baseline_commit"] or "unknown",
                 100 * regression["threshold"], regression["alpha"]), ""]
    for warning in regression["warnings"]:
        lines.append("- **Warning:** " + warning)
    notable = [r for r in regression["results"]
               if r["status"] not in ("unchanged", "not in this run")]
    absent = [r for r in regression["results"] if r["status"] == "not in this run"]
    if absent:
        lines.append("%d benchmark(s) of the baseline are not in this run (filtered out, or "
                     "removed): not compared." % len(absent))
        lines.append("")
    if not notable:
        lines.append("No benchmark changed beyond the threshold with significance.")
    else:
        lines += ["| Binary | Benchmark | Change of median time | p (U test) | Repetitions | Status |",
                  "|---|---|---|---|---|---|"]
        for r in notable:
            lines.append("| %s | %s | %+.1f%% | %s | %d vs %d | %s |" % (
                r["binary"], r["name"], 100 * r["change"],
                "%.4f" % r["pvalue"] if r["pvalue"] is not None else "-",
                r["repetitions"][0], r["repetitions"][1], r["status"]))
    lines.append("")
    return lines


def chart(results, path, title):
    """One SVG per component: a panel per goal with concurry, its peer and the floor.

    Bars are medians, whiskers the interquartile range; the dashed line is where concurry's
    value meets the ratio goal (peer × goal), the dotted one the absolute bound. A panel whose
    values span more than 20× uses a log scale.
    """
    # Matplotlib wants a writable config directory ($HOME may be read-only, as in a test).
    os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="matplotlib-"))
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(len(results), 1, figsize=(8, 1.55 * len(results) + 0.9),
                                   squeeze=False)
    figure.suptitle(title + "\nbars: medians; whiskers: interquartile range; red dashed: the "
                    "goal (peer × goal ratio); red dotted: concurry's own bound", fontsize=9,
                    x=0.01, ha="left")
    for axis, result in zip(axes[:, 0], results):
        field = result["field"]
        bars = [("concurry", result["concurry_samples"], "#1f6fb4"),
                (result["peer_label"], result["peer_samples"], "#9a9a9a")]
        if result["floor"]:
            bars.append(("floor", result["floor_samples"], "#d4d4d4"))
        labels, medians, low, high, colors = [], [], [], [], []
        for label, samples, color in bars:
            if not samples or "median" not in samples:
                continue
            labels.append(label)
            medians.append(samples["median"])
            low.append(samples["median"] - samples["q25"])
            high.append(samples["q75"] - samples["median"])
            colors.append(color)
        verdict = _VERDICT_MARK[result["verdict"]]
        axis.set_title("%s — %s" % (result["metric"], verdict), fontsize=9, loc="left")
        if not medians:
            axis.text(0.5, 0.5, "not run", ha="center", va="center", transform=axis.transAxes)
            axis.set_yticks([])
            axis.set_xticks([])
            continue
        positions = list(range(len(labels)))[::-1]
        axis.barh(positions, medians, xerr=[low, high], color=colors, height=0.6,
                  error_kw={"elinewidth": 1, "capsize": 3})
        axis.set_yticks(positions)
        axis.set_yticklabels(labels, fontsize=8)
        marks = []
        if result["ratio"] is not None:
            marks.append((_median(result["peer_samples"]) * result["goal"], "--", "goal"))
        if result["absolute"] is not None:
            marks.append((result["absolute"], ":", "bound"))
        for value, style, _ in marks:
            axis.axvline(value, color="#c0392b", linestyle=style, linewidth=1.2)
        values = medians + [m[0] for m in marks]
        if max(values) / max(min(values), 1e-300) > 20:
            axis.set_xscale("log")
        else:
            axis.set_xlim(0, max(v + h for v, h in zip(medians, high)) * 1.15)
        ticks = axis.get_xticks()
        axis.set_xticks(ticks)
        axis.set_xticklabels([format_value(t, field) for t in ticks], fontsize=7)
        axis.set_xlim(axis.get_xlim())
        axis.tick_params(axis="y", length=0)
        for side in ("top", "right"):
            axis.spines[side].set_visible(False)
        direction = "lower is better" if result["direction"] == "time" else "higher is better"
        axis.text(1.0, -0.42, direction + ("; ratio %.2f×" % result["ratio"]
                                           if result["ratio"] is not None else ""),
                  transform=axis.transAxes, ha="right", fontsize=7, color="#555555")
    figure.tight_layout(h_pad=1.6)
    figure.savefig(path, format="svg")
    pyplot.close(figure)


def chart_name(component):
    return "".join(c if c.isalnum() else "_" for c in component) + ".svg"


def index_html(report):
    """index.html: context, warnings, then each component's table and chart."""
    measured = report["mode"] != "smoke"
    esc = html.escape
    context = report["machine"]
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<title>concurry-cpp benchmarks</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
             "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
             "th{background:#f3f3f3}.meets{color:#1b7f3b}.MISSES{color:#b03a2e;font-weight:bold}"
             ".noisy{color:#a66f00}.notrun{color:#777}img{max-width:100%}"
             ".warn{background:#fff4e0;padding:.5em 1em}</style></head><body>",
             "<h1>concurry-cpp benchmark report</h1>",
             "<p>Mode <b>%s</b>: %d repetition(s) per benchmark, min time %g s. Ratio = concurry / "
             "peer, medians of the same run; spread = interquartile ends.</p>" % (
                 esc(report["mode"]), report["settings"]["repetitions"],
                 report["settings"]["min_time"])]
    rows = [("Date", context["date"]), ("CPU", context["cpu_model"]),
            ("CPUs usable / online", "%s / %s" % (context["cpus_usable"], context["cpus_online"])),
            ("Load average at start", " ".join("%.2f" % x for x in context["load_average_start"])),
            ("Governor", context["governor"]), ("Kernel", context["kernel"]),
            ("concurry commit", context.get("concurry_commit") or "unknown"),
            ("Compiler", report.get("build", {}).get("concurry_compiler", "unknown")),
            ("Compilation mode", report.get("build", {}).get("concurry_compilation_mode", "?")),
            ("Packages", ", ".join("%s %s" % kv for kv in sorted(context["packages"].items())))]
    parts.append("<table>" + "".join("<tr><th>%s</th><td>%s</td></tr>" % (esc(k), esc(str(v)))
                                     for k, v in rows) + "</table>")
    notes = list(report["warnings"])
    if not measured:
        notes.insert(0, "Smoke mode: each benchmark ran once for a moment; the figures only show "
                        "that it runs.")
    if notes:
        parts.append("<div class=\"warn\">" + "".join("<p>%s</p>" % esc(n) for n in notes) +
                     "</div>")
    for component, results in components(report["goals"]).items():
        parts.append("<h2>%s</h2><table><tr>%s</tr>" % (
            esc(component), "".join("<th>%s</th>" % esc(h) for h in HEADER)))
        for result in results:
            cells = table_rows(result, measured)
            css = _VERDICT_MARK[result["verdict"]].replace(" ", "")
            parts.append("<tr>" + "".join("<td>%s</td>" % esc(c) for c in cells[:-1]) +
                         "<td class=\"%s\">%s</td></tr>" % (css, esc(cells[-1])))
        parts.append("</table>")
        parts.append("<img src=\"%s\" alt=\"%s: concurry against its peers\">" % (
            esc(chart_name(component)), esc(component)))
    regression = regression_markdown(report.get("regression"))
    if regression:
        parts.append("<h2>Against the baseline</h2><pre>%s</pre>" % esc("\n".join(regression[2:])))
    parts.append("<p>Raw Google Benchmark JSON of each binary: <code>raw/</code>; everything "
                 "above: <code>report.json</code>, <code>report.md</code>.</p></body></html>")
    return "\n".join(parts)


def write_all(report, out_dir):
    """Writes report.md, the charts and index.html into out_dir (report.json is the caller's)."""
    text = markdown(report)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(text + "\n")
    for component, results in components(report["goals"]).items():
        chart(results, os.path.join(out_dir, chart_name(component)), "concurry-cpp: " + component)
    with open(os.path.join(out_dir, "index.html"), "w") as f:
        f.write(index_html(report))
    return text
