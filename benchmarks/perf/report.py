"""The performance tables of docs/performance.md from one saved pytest-benchmark run.

    python -m benchmarks.perf.report RUN.json                               # print them
    python -m benchmarks.perf.report RUN.json --page docs/performance.md    # replace the page's block with them

RUN.json: a ``--benchmark-json`` file or a saved ``.benchmarks/*/NNNN_*.json``.
Markdown: the machine and run, then one table per benchmark family, every number
read from the run's ``extra_info`` and stats (nothing typed by hand). The page's
block (``--page FILE``, any markdown file with the markers; ``--readme`` is the old
spelling) sits between ``<!-- perf:begin -->`` and ``<!-- perf:end -->``; the run it
comes from is committed under ``benchmarks/perf/runs/`` and
``tests/test_perf_harness.py`` checks that the two agree.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _f(x, fmt="{:.2f}", none="—"):
    return none if x is None else fmt.format(x)


def _shown(path) -> str:
    """A path inside the repository relative to its root, else the file's name."""
    p, root = Path(path).resolve(), Path(__file__).resolve().parents[2]
    return str(p.relative_to(root)) if root in p.parents else p.name


def _by(run, func):
    return [b for b in run["benchmarks"] if b["name"].split("[")[0] == func]


def machine(run) -> str:
    m, r = run.get("machine_info", {}), run.get("probekit_run", {})
    p = m.get("probekit", {})
    cpu = m.get("cpu", {})
    load = r.get("loadavg_at_end")
    lines = [f"* Run: `{_shown(run.get('_path', 'run.json'))}`, {run.get('datetime', '?')[:16].replace('T', ' ')} UTC, "
             f"mode **{r.get('mode', '?')}**, commit {run.get('commit_info', {}).get('id', '?')[:10]}"
             f"{' (dirty tree)' if run.get('commit_info', {}).get('dirty') else ''}.",
             f"* Machine: {cpu.get('brand_raw', m.get('processor', '?'))}, {p.get('cpu_count', '?')} cores, CPU only; "
             f"Python {m.get('python_version', '?')}, torch {p.get('torch', '?')} ({p.get('torch_threads', '?')} thread{'' if p.get('torch_threads') == 1 else 's'}), "
             f"transformers {p.get('transformers', '?')}, numpy {p.get('numpy', '?')}, scikit-learn {p.get('scikit-learn', '?')}."]
    if load:
        lines.append(f"* Load average at the end of the run: {', '.join(f'{x:.1f}' for x in load)}.")
    if r.get("note"):
        lines.append(f"* Note: {r['note'].rstrip('.')}.")
    return "\n".join(lines)


def extraction(run) -> str:
    rows = ["| workload | texts / tokens, batch | extraction | bare forward | ratio (target ≥ 0.9) | "
            "peak RSS growth: pooled / every position (3 comp.) / `output_hidden_states` |",
            "|---|---|---|---|---|---|"]
    for b in _by(run, "test_extraction"):
        e = b["extra_info"]
        mem = f"{_f(e.get('peak_rss_growth_mib_hooked'), '{:.0f}')} / " \
              f"{_f(e.get('peak_rss_growth_mib_all_positions'), '{:.0f}')} MiB " \
              f"({_f(e.get('memory_ratio'), '{:.1f}')}×)"
        if e.get("peak_rss_growth_mib_hidden_states") is not None:
            mem += f" / {e['peak_rss_growth_mib_hidden_states']:.0f} MiB"
        rows.append(f"| {e['model']} {e['workload']} | {e['n_stimuli']} / {e['n_tokens']}, {e['batch_size']} | "
                    f"{_f(e.get('tokens_per_s'), '{:,.0f}')} tok/s, {_f(e.get('stimuli_per_s'), '{:,.1f}')} texts/s | "
                    f"{_f(e.get('baseline_tokens_per_s'), '{:,.0f}')} tok/s | **{_f(e.get('ratio'))}×** | {mem} |")
    return "\n".join(rows)


def probes(run) -> str:
    rows = ["| data, workload | columns × cells × folds | fast grid | oracle loop | plain loop | "
            "sklearn `RidgeCV` multi-target | agreement with the oracle |", "|---|---|---|---|---|---|---|"]
    for b in _by(run, "test_probe_grid") + _by(run, "test_probe_grid_synthetic"):
        e = b["extra_info"]
        a = e.get("agreement_oracle", {})
        agree = ", ".join(x for x in [
            f"accuracy {a['accuracy_max_diff_pp']:.2f} pp" if "accuracy_max_diff_pp" in a else "",
            f"r {a['r_max_diff']:.4f}" if "r_max_diff" in a else "",
            f"p-values {a['p_max_diff']:.3f}" if "p_max_diff" in a else ""] if x)
        plain = f"{e['plain_s']:.1f} s: **{e['ratio_vs_plain']:.1f}×**" if e.get("plain_s") else "—"
        wl = "labels" if e["workload"] == "labels" else f"+{e['n_permutations']} perm. +{e['n_control']} control"
        rows.append(f"| {e['data']} (n={e['n_stimuli']}, d={e['d_model']}), {wl} | "
                    f"{e['n_columns']} × {e['n_cells']} × {e['n_splits']} | {_f(e.get('median_s'))} s | "
                    f"{e['oracle_s']:.1f} s: **{_f(e.get('ratio'), '{:.1f}')}×** | {plain} | "
                    f"{e['multi_s']:.2f} s: {_f(e.get('ratio_vs_multi'), '{:.1f}')}× | {agree} |")
    notes = []
    for b in _by(run, "test_probe_grid") + _by(run, "test_probe_grid_synthetic"):
        e = b["extra_info"]
        p = e.get("agreement_plain")
        if p and "accuracy_mean_diff_pp" in p:
            notes.append(f"* {e['data']}: `LinearSVC` (hinge, not the same estimator) vs the fast grid: accuracy "
                         f"mean |diff| {p['accuracy_mean_diff_pp']:.1f} pp, max {p['accuracy_max_diff_pp']:.1f} pp per cell.")
        if e.get("whole_grid_labels_s"):
            notes.append(f"* {e['data']}: the whole grid ({e['n_layers']} layers × 3 components, labels only): "
                         f"{e['whole_grid_labels_s']:.1f} s.")
    return "\n".join(rows + ([""] + notes if notes else []))


def e2e(run) -> str:
    rows = ["| model, experiment | path | time (median) | stimuli/s | extraction / probes (last round) | ratio |",
            "|---|---|---|---|---|---|"]
    for b in _by(run, "test_experiment_end_to_end"):
        e = b["extra_info"]
        path = b["params"].get("path", b["name"])
        rows.append(f"| {e['model']}, `{e['experiment']}` ({e['n_stimuli']} stimuli) | {path} | "
                    f"{_f(e.get('median_s'))} s ({b['stats']['rounds']} round{'s' if b['stats']['rounds'] != 1 else ''}) | {_f(e.get('stimuli_per_s'), '{:.1f}')} | "
                    f"{e.get('extract_s')} s / {e.get('probe_s')} s | {_f(e.get('ratio'), '{:.3g}')} "
                    f"({'cold/warm' if path == 'warm' else 'warm/cold'}) |")
    return "\n".join(rows)


def reference(run) -> str:
    out = []
    for b in _by(run, "test_machine_reference"):
        e = b["extra_info"]
        out.append(f"Machine reference ({e['what']}): median {e['median_s'] * 1e3:.2f} ms, "
                   f"{_f(e.get('gflops'), '{:.1f}')} GFLOP/s.")
    return "\n".join(out)


def render(run) -> str:
    parts = [machine(run), "", "Extraction (`bench_extraction.py`):", "", extraction(run), "",
             "Probe grid (`bench_probes.py`):", "", probes(run), "", "End to end (`bench_e2e.py`):", "", e2e(run)]
    ref = reference(run)
    if ref:
        parts += ["", ref]
    return "\n".join(parts) + "\n"


BEGIN, END = "<!-- perf:begin -->", "<!-- perf:end -->"


def load(path) -> dict:
    run = json.loads(Path(path).read_text())
    run["_path"] = str(path)
    return run


def readme_block(readme_text: str) -> str:
    """The text between the markers (what :func:`render` wrote there)."""
    i, j = readme_text.index(BEGIN) + len(BEGIN), readme_text.index(END)
    return readme_text[i:j].strip("\n") + "\n"


def write_readme(readme: Path, text: str) -> None:
    s = readme.read_text()
    i, j = s.index(BEGIN) + len(BEGIN), s.index(END)
    readme.write_text(s[:i] + "\n" + text + s[j:])


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] not in ("--page", "--readme")):
        print(__doc__, file=sys.stderr)
        return 2
    text = render(load(argv[0]))
    if len(argv) == 3:
        write_readme(Path(argv[2]), text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
