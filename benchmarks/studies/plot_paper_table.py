"""The paper table's figures and README table, drawn from ``benchmarks/results/paper_table.json``.

    python -m benchmarks.studies.plot_paper_table [--results benchmarks/results/paper_table.json]
                                                  [--out-dir docs/figures] [--markdown]

One figure per question, each legible at about 800 pixels wide:

1. ``paper_table_rows.png``: is Table 1 reproduced? Valid F1 and Ign F1 of the paper's rows, ours
   (Re-DocRED valid) beside the paper's (DocRED dev, from the result file's config,
   ``configs/paper_table.yaml`` ``paper:``).
2. ``paper_table_gaps.png``: which gaps are real? Each gap between two rows with its 95% interval
   (the paired bootstrap over valid documents that ``paper_table.py --compare`` records under
   ``comparisons``), at 400 training documents and in the 100-document regime, two seeds.
3. ``paper_table_curves.png``: how does fine-tuning get there? Valid F1 after each fine-tuning
   epoch (``finetune_epochs``) of BERT, BERT+D and BERT+D+P, at 400 and at 100 training documents.

Nothing is typed in by hand: run it again after ``paper_table.py`` fills a row. ``--markdown``
prints the README's table (which ``python -m benchmarks.studies.render_results`` writes into
README.md and docs/results.md), each row's gap to BERT with its 95% interval. Needs matplotlib
(``pip install -e .[plots]``) for the PNGs only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def table_rows(results: dict) -> list[dict]:
    """One entry per row of the table's config, in its order: ours (None when not run yet) and the paper's."""
    paper = results.get("config", {}).get("paper", {})
    names = list(results.get("config", {}).get("rows", {})) or list(results["rows"])
    out = []
    for name in names:
        rec = results["rows"].get(name)
        out.append({"row": name, "f1": rec["valid_f1"] if rec else None, "ign_f1": rec["valid_ign_f1"] if rec else None,
                    "paper_f1": paper.get(name, {}).get("f1"), "paper_ign_f1": paper.get(name, {}).get("ign_f1"),
                    "pretrained": bool(rec and rec.get("pretrain")), "adopted": bool(rec and rec.get("adopted"))})
    return out


def references(results: dict, name: str) -> list[str] | None:
    """The rows a row's config names as its ``references`` (a row trained on other data), None if it
    takes the paper's rows."""
    return results.get("config", {}).get("rows", {}).get(name, {}).get("references")


def baseline(results: dict, name: str) -> str | None:
    """The row a row's gap is read against: BERT, or the first of its own references, None if it
    names none."""
    own = references(results, name)
    return "BERT" if own is None else next(iter(own), None)


def markdown(results: dict) -> str:
    """The README's table: ours on Re-DocRED valid beside the paper's DocRED dev, and each row's gap
    to BERT (or to its own baseline, named in the cell)."""
    rows = table_rows(results)
    f1 = {r["row"]: r["f1"] for r in rows}
    base_paper = next((r["paper_f1"] for r in rows if r["row"] == "BERT"), None)

    def cell(value, missing="not run"):
        return missing if value is None else f"{value:.2f}"

    def gain(value, ref):
        return "" if value is None or ref is None else f"{value - ref:+.2f}"

    def vs(name):  # the gap, paper_table.py's paired-bootstrap interval when it ran, the baseline if not BERT
        ref = baseline(results, name)
        if ref is None or f1[name] is None or f1.get(ref) is None:
            return ""
        c = results.get("comparisons", {}).get(f"{name} vs {ref}")  # its gap is of the unrounded F1s
        return ((f"{c['f1_diff']:+.2f} [{c['f1_ci95'][0]:+.2f}, {c['f1_ci95'][1]:+.2f}]" if c else gain(f1[name], f1[ref]))
                + ("" if ref == "BERT" else f" vs {ref}"))

    lines = ["| row | F1 (ours) | Ign F1 (ours) | vs BERT [95% interval] | F1 (paper) | Ign F1 (paper) | vs BERT (paper) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['row']} | {cell(r['f1'])} | {cell(r['ign_f1'])} | {vs(r['row'])} | "
                     f"{cell(r['paper_f1'], '–')} | {cell(r['paper_ign_f1'], '–')} | {gain(r['paper_f1'], base_paper)} |")
    return "\n".join(lines)


PAPER_ROWS = ("BERT", "BERT+D", "BERT+D+P", "w/o MM", "w/o RD", "w/o RA", "w/o Inter", "w/o Intra")
# The gaps figure 2 shows: (label, row, reference); the 100-document ones at both seeds.
GAPS_400 = (("BERT+D − BERT", "BERT+D", "BERT"),
            ("BERT+D+P − BERT+D", "BERT+D+P", "BERT+D"),
            ("w/o MM − BERT+D+P", "w/o MM", "BERT+D+P"),
            ("w/o RD − BERT+D+P", "w/o RD", "BERT+D+P"),
            ("w/o RA − BERT+D+P", "w/o RA", "BERT+D+P"),
            ("larger corpus − BERT+D+P", "BERT+D+P (larger corpus)", "BERT+D+P"))
GAPS_100 = (("BERT+D − BERT, 6·N_ent", "BERT+D (100 training docs{})", "BERT (100 training docs{})"),
            ("BERT+D+P − BERT+D, 6·N_ent", "BERT+D+P (100 training docs{})", "BERT+D (100 training docs{})"),
            ("BERT+D − BERT, 2·N_ent", "BERT+D at 2n (100 training docs{})", "BERT (100 training docs{})"),
            ("BERT+D+P − BERT+D, 2·N_ent", "BERT+D+P at 2n (100 training docs{})",
             "BERT+D at 2n (100 training docs{})"),
            ("synthetic docs added, 2·N_ent", "BERT+D+P at 2n with synthetic documents (100 training docs{})",
             "BERT+D+P at 2n (100 training docs{})"))
SEEDS = (("seed 42", "", "tab:blue", "o"), ("seed 43", "; seed 43", "tab:orange", "s"))
CURVES = (("400 training documents", ("BERT", "BERT+D", "BERT+D+P")),
          ("100 training documents, 2·N_ent kept", ("BERT (100 training docs)", "BERT+D at 2n (100 training docs)",
                                                   "BERT+D+P at 2n (100 training docs)")))
WIDTH, DPI = 8.0, 100  # inches and dots per inch: 800 pixels wide


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.titlesize": 11})
    return plt


def plot_rows(results: dict, png: Path) -> None:
    """Figure 1: the paper's eight rows, ours beside the paper's, F1 and Ign F1."""
    plt = _pyplot()
    rows = [r for r in table_rows(results) if r["row"] in PAPER_ROWS]
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 4.4), sharey=True, layout="constrained")
    y = list(range(len(rows)))[::-1]  # the table's first row on top
    for ax, (ours, theirs, title) in zip(axes, (("f1", "paper_f1", "F1"), ("ign_f1", "paper_ign_f1", "Ign F1"))):
        for i, r in zip(y, rows):
            values = [v for v in (r[ours], r[theirs]) if v is not None]
            if len(values) == 2:
                ax.plot(values, [i, i], color="lightgray", linewidth=2, zorder=1)
        ax.scatter([r[ours] for r in rows if r[ours] is not None], [i for i, r in zip(y, rows) if r[ours] is not None],
                   color="tab:blue", zorder=2, label="ours: MiniLM, 400 training docs, Re-DocRED valid")
        ax.scatter([r[theirs] for r in rows if r[theirs] is not None],
                   [i for i, r in zip(y, rows) if r[theirs] is not None], color="dimgray", marker="D", zorder=2,
                   label="paper: BERT-base, 3,053 training docs, DocRED dev")
        ax.set_title(title)
        ax.set_xlabel("percent (epoch and threshold chosen on valid)")
        ax.grid(axis="x", alpha=0.4)
    axes[0].set_yticks(y, [r["row"] for r in rows])
    axes[0].set_ylim(-0.7, len(rows) - 0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=1, frameon=False)
    fig.suptitle("Table 1 rows: ours beside the paper's")
    _save(fig, png)


def _gap(results: dict, row: str, ref: str):
    c = results.get("comparisons", {}).get(f"{row} vs {ref}")
    return None if c is None else (c["f1_diff"], c["f1_ci95"])


def plot_gaps(results: dict, png: Path) -> None:
    """Figure 2: gaps between rows with their 95% intervals, 400 training documents above, the
    100-document regime (two fine-tuning seeds) below."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(WIDTH, 6.4), sharex=True, layout="constrained",
                                      gridspec_kw={"height_ratios": [len(GAPS_400), len(GAPS_100) + 0.6]})
    for ax, gaps, seeds, title in ((top, GAPS_400, SEEDS[:1], "400 training documents (6·N_ent kept)"),
                                   (bottom, GAPS_100, SEEDS, "100 training documents, two fine-tuning seeds")):
        y = list(range(len(gaps)))[::-1]
        for k, (seed_label, suffix, colour, marker) in enumerate(seeds):
            offset = 0.0 if len(seeds) == 1 else (0.15 if k == 0 else -0.15)
            points = [(i + offset, _gap(results, row.format(suffix), ref.format(suffix)))
                      for i, (_, row, ref) in zip(y, gaps)]
            points = [(i, g) for i, g in points if g is not None]
            if not points:
                continue
            ax.errorbar([g[0] for _, g in points], [i for i, _ in points],
                        xerr=[[g[0] - g[1][0] for _, g in points], [g[1][1] - g[0] for _, g in points]],
                        fmt=marker, color=colour, capsize=3, label=seed_label)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, [label for label, _, _ in gaps])
        ax.set_ylim(-0.6, len(gaps) - 0.4)
        ax.set_title(title, loc="left")
        ax.grid(axis="x", alpha=0.4)
    bottom.legend(loc="lower right", fontsize=8)
    bottom.set_xlabel("valid F1 gap (points) and its 95% interval (paired bootstrap, 100 valid documents)")
    fig.suptitle("Which gaps are outside their intervals?")
    _save(fig, png)


def plot_curves(results: dict, png: Path) -> None:
    """Figure 3: valid F1 after each fine-tuning epoch of three rows at 400 and at 100 documents."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.9), sharey=True, layout="constrained")
    colours = ("tab:gray", "tab:blue", "tab:red")
    for ax, (title, names) in zip(axes, CURVES):
        for name, colour in zip(names, colours):
            points = (results["rows"].get(name) or {}).get("finetune_epochs")
            if points:
                ax.plot([p["epoch"] for p in points], [p["f1"] for p in points], marker=".", color=colour,
                        label=name.replace(" (100 training docs)", "").replace(" at 2n", ""))
        ax.set_title(title)
        ax.set_xlabel("fine-tuning epoch")
        ax.grid(alpha=0.4)
        if ax.lines:
            ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("valid F1 (threshold chosen on valid)")
    fig.suptitle("Fine-tuning curves: pre-training's head start, and whether it lasts")
    _save(fig, png)


def _save(fig, png: Path) -> None:
    import matplotlib.pyplot as plt

    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=DPI)
    plt.close(fig)


FIGURES = {"paper_table_rows.png": plot_rows, "paper_table_gaps.png": plot_gaps, "paper_table_curves.png": plot_curves}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(ROOT / "benchmarks/results/paper_table.json"))
    parser.add_argument("--out-dir", default=str(ROOT / "docs/figures"), help="where the PNGs go")
    parser.add_argument("--markdown", action="store_true", help="print the README's table and draw nothing")
    args = parser.parse_args()
    results = json.loads(Path(args.results).read_text())
    if args.markdown:
        print(markdown(results))
        return 0
    for name, draw in FIGURES.items():
        draw(results, Path(args.out_dir) / name)
        print(f"-> {Path(args.out_dir) / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
