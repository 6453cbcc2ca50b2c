"""The paper table's figure and README table, drawn from ``benchmarks/results/paper_table.json``.

    python benchmarks/plot_paper_table.py [--results benchmarks/results/paper_table.json]
                                          [--png docs/paper_table.png] [--markdown]

Left: valid F1 and Ign F1 of every row that has a record, beside the paper's DocRED dev figures
(taken from the result file's config, ``configs/paper_table.yaml`` ``paper:``). Middle: valid F1
after each fine-tuning epoch of every row (``finetune_epochs``; dashed: rows trained on other data,
which name their own references). Right: the per-task pre-training
loss of BERT+D+P against the optimizer step (the row's ``pretrain.curves``). Nothing is
typed in by hand: run it again after ``paper_table.py`` fills a row. ``--markdown`` prints the
README's table, each row's gap to BERT with its 95% interval from the paired bootstrap over valid
documents that ``paper_table.py`` records (``comparisons``). Needs matplotlib
(``pip install -e .[plots]``) for the PNG only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CURVE_ROW = "BERT+D+P"
TASK_NAMES = {"mm_intra_loss": "MM intra", "mm_inter_loss": "MM inter", "rd_intra_loss": "RD intra",
              "rd_inter_loss": "RD inter", "ra_loss": "RA"}


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


def plot(results: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table_rows(results)
    curves = (results["rows"].get(CURVE_ROW) or {}).get("pretrain", {}).get("curves")
    fig, (bars, epochs, losses) = plt.subplots(1, 3, figsize=(21, 5.6), gridspec_kw={"width_ratios": [3, 2, 2]})
    x = range(len(rows))
    width = 0.2
    for offset, key, label, style in ((-1.5, "f1", "F1 (ours, Re-DocRED valid)", {"color": "tab:blue"}),
                                      (-0.5, "ign_f1", "Ign F1 (ours)", {"color": "tab:cyan"}),
                                      (0.5, "paper_f1", "F1 (paper, DocRED dev)", {"color": "tab:gray"}),
                                      (1.5, "paper_ign_f1", "Ign F1 (paper)", {"color": "lightgray"})):
        values = [r[key] or 0.0 for r in rows]
        bars.bar([i + offset * width for i in x], values, width, label=label, **style)
    known = [v for r in rows for v in (r["f1"], r["ign_f1"], r["paper_f1"], r["paper_ign_f1"]) if v]
    low, high = (max(0.0, min(known) - 5), max(known) + 3) if known else (0.0, 100.0)
    bars.set_ylim(low, high)
    for i, r in enumerate(rows):
        if r["f1"] is None:
            bars.text(i - width, low + 0.3, "not run", rotation=90, ha="center", va="bottom", fontsize=8)
    bars.set_xticks(list(x), [r["row"] for r in rows], rotation=30, ha="right")
    bars.set_ylabel("percent")
    bars.set_title("Valid F1 per row (epoch and threshold chosen on valid)")
    bars.legend(fontsize=8, loc="upper left", ncol=2)
    # one per row: more rows than the default cycle's ten colours, or tab20's twenty
    colours = plt.get_cmap("tab20").colors + plt.get_cmap("tab20b").colors
    for i, name in enumerate(r["row"] for r in rows):
        points = (results["rows"].get(name) or {}).get("finetune_epochs")
        if points:  # dashed: a row trained on other data than the paper's rows (it names its own references)
            epochs.plot([p["epoch"] for p in points], [p["f1"] for p in points], marker=".", label=name,
                        linestyle="-" if references(results, name) is None else "--", color=colours[i % len(colours)])
    epochs.set_xlabel("fine-tuning epoch")
    epochs.set_ylabel("valid F1 (threshold chosen on valid)")
    epochs.set_title("Valid F1 after each fine-tuning epoch")
    if epochs.lines:
        epochs.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the curves, not on them
    if curves:
        for key, label in TASK_NAMES.items():
            if key in curves and any(v is not None for v in curves[key]):
                losses.plot(curves["step"], curves[key], label=label)
        losses.set_xlabel("optimizer step")
        losses.set_ylabel("training loss (mean over the log window)")
        losses.legend(fontsize=8)
    else:
        losses.text(0.5, 0.5, f"{CURVE_ROW}: not run yet", ha="center", va="center", transform=losses.transAxes)
    losses.set_title(f"{CURVE_ROW}: pre-training loss per task")
    fig.suptitle(f"dsdocre on real data: {results.get('encoder', '')}; distant corpus "
                 f"{results.get('ds_docs', '?')} documents, {results.get('ds_pairs', '?')} document pairs", fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(ROOT / "benchmarks/results/paper_table.json"))
    parser.add_argument("--png", default=str(ROOT / "docs/paper_table.png"))
    parser.add_argument("--markdown", action="store_true", help="print the README's table and draw nothing")
    args = parser.parse_args()
    results = json.loads(Path(args.results).read_text())
    if args.markdown:
        print(markdown(results))
        return 0
    plot(results, Path(args.png))
    print(f"-> {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
