"""README and docs tables generated from committed results: ``python -m benchmarks.readme_tables [--check]``.

Every table in README.md and docs/results.md that shows a measured number sits between
``<!-- generated: NAME -->`` and ``<!-- end generated -->``; this script rewrites those regions from the
results files and nothing else (``--check``: exit 1 when a page differs from what it would write;
tests/test_readme.py runs the same comparison).  Regions (``PAGES``: which page holds which):

* ``demo``: the table ``./run.sh demo`` prints, from docs/demo_results.json (written by
  ``python examples/minilm_demo.py --record``; ``demo_table`` is also what the demo prints).
* ``which-method``: test normalized accuracy of each method on the MiniLM benchmark (six tasks,
  benchmarks/results/quality.json, every row of the track from one run) and the causal-LM track (four tasks, llm_quality.json), its
  perplexity there, and its merge time against task arithmetic (awd_speed / peer_speed*.json), every
  number linked to the page it comes from, and which differences are within noise.
* ``hard-track``: the hard causal-LM track (eight tasks, benchmarks/results/llm_hard.json, written by
  ``python -m benchmarks.llm_hard.run``): each row's test normalized score and its differences to ties
  and task_arithmetic with their paired-bootstrap 95 % intervals, the run's cost and its K sweep; one
  line saying it has not been run while that file is absent.
* ``minilm-track``, ``llm-quick-track`` (docs/results.md): every row of the MiniLM and the causal-LM quick
  track with its paired-bootstrap interval and differences to ties and task_arithmetic (— where the file
  predates per-example results), and the run that wrote it.

Reads JSON only (no torch, no mergekit): the test of the README imports it.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from benchmarks.harness.report import difference_text, difference_to, interval_text
from benchmarks.quality.results_files import CANONICAL

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
DEMO_RESULTS = ROOT / "docs" / "demo_results.json"
DOCS_RESULTS = ROOT / "docs" / "results.md"

REGION = re.compile(r"(<!-- generated: (?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)

LLM_FILE = "llm_quality"
HARD_FILE = "llm_hard"
NOISE_SE = 2.0  # "within noise": within this many binomial standard errors of the best row's mean


@lru_cache(maxsize=None)
def _results(stem: str) -> Dict[str, Any]:
    return json.loads((RESULTS / f"{stem}.json").read_text())


def _hard_results() -> Optional[Dict[str, Any]]:
    """llm_hard.json, or None while the hard track has not been run (the tests replace this loader)."""
    return _results(HARD_FILE) if (RESULTS / f"{HARD_FILE}.json").exists() else None


def _link(text: str, stem: str) -> str:
    return f"[{text}](benchmarks/results/{stem}.md)"


def minilm_entry(key: str) -> Optional[Tuple[str, Dict[str, Any]]]:
    """(file stem, method entry) of a MiniLM method, from quality.json (every row of the track), or None."""
    entry = _results(CANONICAL)["methods"].get(key)
    return None if entry is None else (CANONICAL, entry)


def _noise(entry: Mapping[str, Any], individual: Mapping[str, float], n_test: Mapping[str, int]) -> Tuple[float, float, float]:
    """(normalized mean, its binomial standard error, the largest per-task standard error), in points,
    taking the fine-tunes' accuracies as exact: an estimate of test-sample noise, not a bootstrap interval."""
    tasks = list(individual)
    variance = sum(entry["tasks"][t] * (1 - entry["tasks"][t]) / n_test[t] / individual[t] ** 2 for t in tasks)
    per_task = max(math.sqrt(entry["tasks"][t] * (1 - entry["tasks"][t]) / n_test[t]) for t in tasks)
    return 100 * entry["normalized_avg"], 100 * math.sqrt(variance) / len(tasks), 100 * per_task


def _minilm_test_sizes() -> Dict[str, int]:
    return {t: s["test"]["size"] for t, s in _results("quality")["splits"].items()}


def _llm_test_sizes() -> Dict[str, int]:
    return {t: s["test"] for t, s in _results(LLM_FILE)["splits"].items()}


@dataclass(frozen=True)
class Row:
    short: str                               # the name in the noise sentences
    label: str                               # markdown: the method and its YAML
    minilm: Optional[str]                    # key in the MiniLM results files
    llm: Optional[str]                       # key in llm_quality.json
    speed: Optional[Tuple[str, str]]         # (results file, key) of its merge-time ratio
    when: str


ROWS: Tuple[Row, ...] = (
    Row("task_arithmetic", "`task_arithmetic`", "task_arithmetic", "task_arithmetic", ("awd_speed", "task_arithmetic"),
        "the baseline and the cheapest; most sensitive to λ"),
    Row("ties", "`ties`", "ties", "ties", ("awd_speed", "ties"),
        "the highest of mergekit's own methods on both tracks (on MiniLM `della` is within the noise of it)"),
    Row("awd", "`awd` (defaults: `scope: tensor`)", "awd_tensor", "awd_tensor", ("awd_speed", "awd_tensor"),
        "the paper's form and the package default; far behind on the causal-LM test split (level on its validation split): prefer `scope: row`"),
    Row("awd row", "`awd`, `scope: row`", "awd_row", "awd_row", ("awd_speed", "awd_row"),
        "AWD alone at about task arithmetic's cost (the authors' code's granularity); level with `ties` on both quick tracks"),
    Row("awd row + tsv", "`awd`, `scope: row`, `combine: tsv`", "awd_row_tsv", "awd_row_tsv", None,
        "the best AWD on the causal LM, not separable there from its best row; +2.4 [0.5, 4.3] over `tsv` alone on MiniLM, +1.2 [−0.4, 2.9] on the causal LM"),
    Row("tsv disentangle", "`tsv`, `disentangle: true`", "tsv_disentangled", "tsv_disentangled", None,
        "AWD at `scope: tensor` in front of TSV-M: +2.4 [1.1, 3.7] over `tsv` on MiniLM, −2.6 [−4.8, −0.5] on the causal LM"),
    Row("tsv", "`tsv`", "tsv", "tsv", ("peer_speed", "tsv_exact"), "SVD-based; `svd: lowrank` when exact SVDs are too slow"),
    Row("wudi", "`wudi` (default `solver: adam`)", "wudi_adam", "wudi_adam", ("peer_speed_adam", "wudi_adam"),
        "top of the causal-LM quick track (ahead of ties, interval above 0); the slowest on CPU (an Adam solve per matrix)"),
    Row("wudi exact", "`wudi`, `solver: exact`", "wudi_exact", "wudi_exact", ("peer_speed", "wudi_exact"),
        "WUDI's converged minimiser, for a fraction of Adam's CPU time"),
    Row("iso_c", "`iso_c`", "iso_c", "iso_c", ("peer_speed", "iso_c"),
        "cheap SVD merge; raised perplexity most on the causal LM"),
    Row("iso_cts", "`iso_cts`", "iso_cts", "iso_cts", ("peer_speed", "iso_cts"),
        "top of the MiniLM benchmark (encoders with their own heads)"),
    Row("awd row + iso_cts", "`awd`, `scope: row`, `combine: iso_cts`", "awd_iso_cts", None, None,
        "the best AWD on MiniLM, level with `iso_cts` alone (−0.9 [−2.0, 0.2])"),
    Row("ace", "`ace`", "ace", "ace", ("peer_speed_ace", "ace"),
        "closed form; on MiniLM its ridge `eps` chosen on validation (1e-4) scored 82.9, above `ties` (+3.9 [1.7, 6.1])"),
)


SHOWN = ("lambda", "density", "gamma", "alpha", "select", "eps")  # what a validation grid chose, when it had the axis


def _chosen(params: Mapping[str, Any]) -> str:
    """What the track's validation split chose: λ, and density/α/select/ε where the grid had them."""
    parts = []
    for key in SHOWN:
        if key in params:
            value = params[key]
            parts.append(f"{ {'lambda': 'λ', 'alpha': 'α', 'eps': 'ε'}.get(key, key)} {value}")
    return ", ".join(parts)


def _speed_cell(speed: Optional[Tuple[str, str]]) -> str:
    if speed is None:
        return "not measured"
    stem, key = speed
    ratio = _results(stem)["ratios_to_task_arithmetic"][key]
    ratio = ratio["time_ratio"] if isinstance(ratio, Mapping) else ratio
    return _link(f"{ratio:.2f}×", stem)


def which_method() -> str:
    """The which-method-when table and the noise statement under it."""
    minilm_individual = _results("quality")["individual"]
    llm = _results(LLM_FILE)
    cells: List[List[str]] = []
    minilm_scores: Dict[str, Tuple[float, float, float]] = {}
    llm_scores: Dict[str, Tuple[float, float, float]] = {}
    shown: Dict[str, Dict[str, Mapping[str, Any]]] = {"MiniLM": {}, "SmolLM2": {}}
    for row in ROWS:
        found = minilm_entry(row.minilm) if row.minilm else None
        if found:
            stem, entry = found
            shown["MiniLM"][row.short] = entry
            minilm_scores[row.short] = _noise(entry, minilm_individual, _minilm_test_sizes())
            minilm = _score_cell(entry, stem)
            chosen = [f"MiniLM {_chosen(entry['params'])}"]
        else:
            minilm, chosen = "not run", []
        entry = llm["methods"].get(row.llm) if row.llm else None
        if entry:
            shown["SmolLM2"][row.short] = entry
            llm_scores[row.short] = _noise(entry, llm["individual"], _llm_test_sizes())
            lm = _score_cell(entry, LLM_FILE)
            ppl = f"{entry['perplexity']:.2f}"
            chosen.append(f"SmolLM2 {_chosen(entry['params'])}")
        else:
            lm, ppl = "not run", "—"
        cells.append([row.label, minilm, lm, ppl, _speed_cell(row.speed), "; ".join(chosen), row.when])
    for column, scores in ((1, minilm_scores), (2, llm_scores)):
        best = max(scores.values())[0]
        for line, row in zip(cells, ROWS):
            if row.short in scores and scores[row.short][0] == best:
                line[column] = f"**{line[column]}**"
    header = ["merge (YAML)", f"MiniLM, 6 tasks: test normalized %{_ci_label(shown['MiniLM'])}",
              f"SmolLM2, 4 tasks: test normalized %{_ci_label(shown['SmolLM2'])}",
              f"SmolLM2 perplexity (base {llm['pretrained']['perplexity']:.2f})", "merge time × task_arithmetic",
              "chosen on validation", "note"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(line) + " |" for line in cells]
    minilm_file = _results(CANONICAL)
    lines += ["", _interval_sentence("MiniLM", shown["MiniLM"], minilm_file["methods"], _minilm_test_sizes())
              or _noise_sentence("MiniLM", minilm_scores, _minilm_test_sizes()), "",
              _interval_sentence("SmolLM2", shown["SmolLM2"], llm["methods"], _llm_test_sizes())
              or _noise_sentence("SmolLM2", llm_scores, _llm_test_sizes())]
    return "\n".join(lines) + "\n"


def _ci_label(shown: Mapping[str, Mapping[str, Any]]) -> str:
    return " [95 % CI]" if any("normalized_ci95" in entry for entry in shown.values()) else ""


def _score_cell(entry: Mapping[str, Any], stem: str) -> str:
    """The row's test normalized score, linked to its page, with its 95 % interval where it has one."""
    cell = _link(f"{100 * entry['normalized_avg']:.1f}", stem)
    return f"{cell} {interval_text(entry['normalized_ci95'])}" if "normalized_ci95" in entry else cell


def _interval_sentence(track: str, shown: Mapping[str, Mapping[str, Any]], rows: Mapping[str, Mapping[str, Any]],
                       sizes: Mapping[str, int]) -> Optional[str]:
    """Which shown rows the track's paired bootstrap cannot separate from its best row on test (the
    difference's 95 % interval contains 0); None while a shown row has no interval (then the binomial
    estimate of ``_noise_sentence`` stands in)."""
    if not shown or not all("normalized_ci95" in entry for entry in shown.values()):
        return None
    best = max(rows, key=lambda name: rows[name]["normalized_avg"])
    best_entry = rows[best]
    inside = []
    for label, entry in sorted(shown.items(), key=lambda item: -item[1]["normalized_avg"]):
        if entry is best_entry:
            continue
        difference = difference_to(entry, best)
        if difference is None:  # no paired difference to this best row was drawn: say nothing beyond the intervals
            return None
        if not difference["excludes_zero"]:
            inside.append(f"{label} ({100 * entry['normalized_avg']:.1f}, {100 * difference['diff']:+.1f} "
                          f"{interval_text(difference['ci95'])})")
    n = "/".join(str(v) for v in sorted(set(sizes.values())))
    resamples = best_entry["bootstrap"]["resamples"]
    return (f"**Noise, {track}**: paired bootstrap 95 % intervals ({resamples:,} seeded resamples of the {n} test "
            f"examples per task, the same resample for every row). The track's best row on test is `{best}` "
            f"({100 * best_entry['normalized_avg']:.1f} {interval_text(best_entry['normalized_ci95'])}); not "
            f"separable from it by this evidence (the difference's interval contains 0): "
            f"{', '.join(inside) or 'none of the rows above'}.")


def _noise_sentence(track: str, scores: Mapping[str, Tuple[float, float, float]], sizes: Mapping[str, int]) -> str:
    """Which rows are within ``NOISE_SE`` binomial standard errors of the best one."""
    best, se, per_task = max(scores.values())
    near = [f"{label} ({value:.1f})" for label, (value, _, _) in sorted(scores.items(), key=lambda item: -item[1][0])
            if best - value <= NOISE_SE * se]
    n = "/".join(str(v) for v in sorted(set(sizes.values())))
    bootstrap = "its results file predates per-example results, so no bootstrap interval yet; its next run adds them"
    return (f"**Noise, {track}**: {n} test examples per task, so up to ±{per_task:.1f} points per task and "
            f"±{se:.1f} on the best row's normalized mean (one binomial standard error: an estimate of test-sample "
            f"noise, not a measured interval; {bootstrap}). Within {NOISE_SE:g} standard "
            f"errors of the best, not separable by this evidence: {', '.join(near)}.")


STRUCTURE = ("scope", "combine", "solver", "combine_solver", "disentangle")  # the YAML that names a hard-track row
HARD_REFERENCES = ("ties", "task_arithmetic")


def _hard_label(name: str, entry: Mapping[str, Any]) -> str:
    """The row and its YAML in short: ``awd_row``: ``awd``, ``scope: row``; a learned row's objective;
    the method ``tune_methods`` chose."""
    if "chosen_row" in entry:
        return f"`{name}` → `{entry['chosen_row']}`"
    params = entry["params"]
    method = str(params.get("merge_method", name))
    yaml = [f"`{key}: {str(params[key]).lower() if isinstance(params[key], bool) else params[key]}`"
            for key in STRUCTURE if key in params]
    if "layerwise" in params:
        yaml.append(f"tune `--layerwise --objective {params['layerwise']}`")
    if method == name and not yaml:
        return f"`{name}`"
    return f"`{name}`: " + ", ".join([f"`{method}`", *yaml])


def _hard_chosen(entry: Mapping[str, Any]) -> str:
    """``_chosen`` of the row's parameters; for a layer-wise row, that its λ were learned."""
    params = entry["params"]
    learned = f"λ per task and block learned ({params['steps']} steps)" if "layerwise" in params else ""
    return ", ".join(part for part in (_chosen(params), learned) if part) or "—"


def _k_sweep_summary(sweep: Mapping[str, Mapping[str, Any]]) -> str:
    """One clause: each sweep method's normalized % at every K (``ties 90.1/85.0/80.2``), or that none ran."""
    if not sweep:
        return "No K sweep in this run"
    ks = sorted(sweep, key=int)
    parts = []
    for method, entry in sweep[ks[-1]].items():
        label = method if entry["row"] == method else f"{method} (`{entry['row']}`)"
        values = [sweep[k].get(method, {}).get("normalized_avg") for k in ks]
        parts.append(f"{label} " + "/".join("—" if v is None else f"{100 * v:.1f}" for v in values))
    return f"K sweep, normalized % at K = {'/'.join(ks)}: " + "; ".join(parts)


def hard_track() -> str:
    """The hard track's table (rows by test normalized score) and one line on the run, or one line
    saying it has not been run."""
    results = _hard_results()
    if results is None:
        return ("The hard track (`python -m benchmarks.llm_hard.run`, `./run.sh llm-hard`) has not been run at "
                "this code state yet: no numbers.\n")
    header = ["merge (row: YAML)", "test normalized % [95 % CI]", "vs ties, points [95 % CI]",
              "vs task_arithmetic, points [95 % CI]", "chosen on validation"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    rows = sorted(results["methods"].items(), key=lambda item: (-item[1]["normalized_avg"], item[0]))
    for name, entry in rows:
        score = _link(f"{100 * entry['normalized_avg']:.1f}", HARD_FILE)
        cells = [_hard_label(name, entry), f"{score} {interval_text(entry['normalized_ci95'])}",
                 *(difference_text(entry, ref) for ref in HARD_REFERENCES), _hard_chosen(entry)]
        lines.append("| " + " | ".join(cells) + " |")
    settings, tasks = results["settings"], results["tasks"]
    sizes = "/".join(str(n) for n in sorted({task["test"] for task in tasks.values()}))
    seconds = settings["seconds"]
    base = results["pretrained"].get("normalized_avg")
    lines += ["", f"**Bold**: the difference's 95 % interval excludes 0. Run: {seconds:,} s ({seconds / 3600:.1f} h; "
              f"merging {settings.get('seconds_merging', '?')} s, scoring {settings.get('seconds_scoring', '?')} s), "
              f"code `{settings['code']}`; {len(tasks)} tasks, {sizes} test lines per task"
              + (f"; base {100 * base:.1f} %" if base is not None else "")
              + f". {_k_sweep_summary(results.get('k_sweep') or {})}."]
    return "\n".join(lines) + "\n"


def _track_table(rows: Sequence[Tuple[str, Mapping[str, Any]]], with_perplexity: bool) -> List[str]:
    """A quick track's rows in the file's order: test normalized % with its interval, the differences to
    ties and task_arithmetic, perplexity (causal LM), what validation chose (the docs page's table)."""
    header = ["method (row)", "test normalized % [95 % CI]", "vs ties [95 % CI]", "vs task_arithmetic [95 % CI]",
              *(["perplexity"] if with_perplexity else []), "chosen on validation"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, entry in rows:
        ci = entry.get("normalized_ci95")
        cells = [f"`{name}`", f"{100 * entry['normalized_avg']:.1f}" + (f" {interval_text(ci)}" if ci else ""),
                 *(difference_text(entry, ref) for ref in HARD_REFERENCES),
                 *([f"{entry['perplexity']:.2f}"] if with_perplexity else []), _chosen(entry["params"]) or "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _run_line(results: Mapping[str, Any], command: str, stem: str) -> str:
    """Which run wrote the track's file, and how to read its intervals (or that it has none)."""
    settings = results["settings"]
    seconds = settings.get("seconds")
    timing = f"{seconds:,} s ({seconds / 3600:.1f} h)" if seconds else "time not recorded"
    drawn = [e["bootstrap"]["resamples"] for e in results["methods"].values() if "bootstrap" in e]
    intervals = (f"**Bold**: the difference's 95 % interval excludes 0 (paired bootstrap, {drawn[0]:,} seeded "
                 "resamples)." if drawn else "No intervals: this file predates per-example results (its next run "
                 "adds them).")
    return (f"From [{stem}.md](../benchmarks/results/{stem}.md), written by `{settings.get('command', command)}` "
            f"({timing}; code `{settings['merge_code']}`). {intervals}")


def minilm_track() -> str:
    """docs/results.md: every row of the MiniLM track (quality.json, one run)."""
    results = _results(CANONICAL)
    lines = _track_table(list(results["methods"].items()), with_perplexity=False)
    lines += ["", _run_line(results, "python -m benchmarks.quality.run", CANONICAL)]
    return "\n".join(lines) + "\n"


def llm_quick_track() -> str:
    """docs/results.md: every row of the causal-LM quick track (llm_quality.json)."""
    results = _results(LLM_FILE)
    lines = _track_table(list(results["methods"].items()), with_perplexity=True)
    lines += ["", _run_line(results, "python -m benchmarks.llm.run", LLM_FILE)
              + f" Base perplexity {results['pretrained']['perplexity']:.2f}."]
    if results["settings"].get("updates"):
        lines[-1] += " Rows added later by `--update`: " + "; ".join(
            f"{', '.join(u['methods'])} (code `{u['merge_code']}`)" for u in results["settings"]["updates"]) + "."
    return "\n".join(lines) + "\n"


def demo_table(data: Mapping[str, Any]) -> str:
    """The demo's printed table (examples/minilm_demo.py prints exactly this)."""
    tasks: Sequence[str] = data["tasks"]
    width = max(len(t) for t in tasks) + 2
    rows: Mapping[str, Mapping[str, Any]] = data["rows"]
    name_width = max(len(str(row.get("label", name))) for name, row in rows.items()) + 2
    lines = [f"test accuracy (%), {data['test_per_task']} examples per task, each task with its own head; "
             f"λ chosen by tune on {data['validation_per_task']} validation examples per task",
             f"{'':<{name_width}}" + "".join(f"{t:>{width}}" for t in tasks)
             + f"{'mean':>7}{'normalized':>12}{'λ (tune)':>10}{'val. norm.':>12}"]
    for name, row in rows.items():
        lam = f"{row['lambda']}" if "lambda" in row else ""
        val = f"{100 * row['validation_normalized']:.1f}" if "validation_normalized" in row else ""
        lines.append((f"{str(row.get('label', name)):<{name_width}}"
                      + "".join(f"{100 * row['tasks'][t]:>{width}.1f}" for t in tasks)
                      + f"{100 * row['mean']:>7.1f}{100 * row['normalized']:>12.1f}{lam:>10}{val:>12}").rstrip())
    return "\n".join(lines)


def demo() -> str:
    data = json.loads(DEMO_RESULTS.read_text())
    seconds = data["seconds"]
    first = ("the fine-tunes trained in that run" if data["fine_tuned_this_run"]
             else "the fine-tunes cached from an earlier run")
    edges = [f"{row.get('label', name)} (λ {row['lambda']}, grid {min(row['lambda_grid'])}–{max(row['lambda_grid'])})"
             for name, row in data["rows"].items()
             if "lambda" in row and row["lambda"] in (min(row["lambda_grid"]), max(row["lambda_grid"]))]
    edge = (f" Chosen at the edge of its λ grid (the benchmark's; a λ beyond it was not tried): {', '.join(edges)}."
            if edges else "")
    return ("```text\n" + demo_table(data) + "\n```\n\n"
            f"Recorded in [docs/demo_results.json](docs/demo_results.json): {data['machine']}, {data['threads']} "
            f"torch threads, {seconds['total']:.0f} s with {first}; code `{data['code']}`.{edge}\n")


GENERATORS: Dict[str, Callable[[], str]] = {"demo": demo, "which-method": which_method, "hard-track": hard_track,
                                            "minilm-track": minilm_track, "llm-quick-track": llm_quick_track}
PAGES: Dict[Path, Tuple[str, ...]] = {  # each page and the regions it holds
    README: ("demo", "which-method", "hard-track"),
    DOCS_RESULTS: ("minilm-track", "llm-quick-track"),
}


def render(text: str) -> str:
    """``text`` with every generated region rewritten; an unknown region name is an error."""
    def replace(match: "re.Match[str]") -> str:
        name = match.group("name")
        if name not in GENERATORS:
            raise KeyError(f"generated region {name!r} has no generator (known: {', '.join(GENERATORS)})")
        return match.group(1) + GENERATORS[name]() + match.group(4)

    return REGION.sub(replace, text)


def region_names(text: str) -> List[str]:
    return [m.group("name") for m in REGION.finditer(text)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is not what would be written")
    args = parser.parse_args(argv)
    stale = []
    for page in PAGES:
        text = page.read_text()
        new = render(text)
        name = page.relative_to(ROOT)
        if new == text:
            print(f"{name} already up to date")
        elif args.check:
            stale.append(str(name))
        else:
            page.write_text(new)
            print(f"rewrote {', '.join(region_names(text))} in {name}")
    if stale:
        print(f"{', '.join(stale)}: generated regions are stale; run python -m benchmarks.readme_tables", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
