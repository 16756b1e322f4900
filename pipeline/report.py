"""Pages a person reads: the run's report and a comparison of experiments, each one self-contained HTML file.

    python -m pipeline.report                 # reports/index.html (what the report stage writes)
    python -m pipeline.report experiments     # reports/experiments.html from `dvc exp show --json`

A page makes no network request when opened: pictures are embedded as data: URIs (animated GIFs for
videos, PNG charts drawn by matplotlib), styles are inline, and there is no script. The run's report
shows the params (those that differ from the schema's defaults marked), the samples, real test clips
beside their VQ-VAE reconstructions, the training curves of both models, every metric with its
protocol, and the data (clips per split and class, rejected inputs by reason). The experiments page
lists every finished experiment with the params that differ between them, their metrics, and their
training curves overlaid.
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import paths, tables
from videogpt.config import Params, load, to_dict
from videogpt.fileio import write_text
from videogpt.model_card import fmt, metric_rows

N_RECON_CLIPS = 8      # real test clips shown beside their reconstructions
SHOWN_WIDTH = 512      # pixels: small clips are enlarged (nearest neighbour) to about this width
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top} th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.changed td{background:#fff4cc} .note{color:#666;font-size:90%} img{image-rendering:pixelated;max-width:100%}
figure{margin:.5em 0} figcaption{color:#555;font-size:90%} .protocol{color:#555;font-size:85%}
nav a{margin-right:1em}
"""


# ---------------------------------------------------------------- small helpers
def esc(value) -> str:
    return html.escape(str(value))


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def img(data: bytes, mime: str, alt: str) -> str:
    return f'<img src="{data_uri(data, mime)}" alt="{esc(alt)}">'


def table(header: list[str], rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    """An HTML table; cells are already HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(f'<tr class="{cls}">' + "".join(f"<td>{c}</td>" for c in row) + "</tr>"
                   for row, cls in zip(rows, row_classes or [""] * len(rows)))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, sections: list[tuple[str, str]], subtitle: str = "") -> str:
    nav = "".join(f'<a href="#s{i}">{esc(name)}</a>' for i, (name, _) in enumerate(sections))
    body = "".join(f'<h2 id="s{i}">{esc(name)}</h2>{content}' for i, (name, content) in enumerate(sections))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1><p class=note>{esc(subtitle)}</p>"
            f"<nav>{nav}</nav>{body}</body></html>\n")


# ---------------------------------------------------------------- charts
@dataclass
class Line:
    label: str
    steps: list[float]
    values: list[float]


def chart_png(panels: dict[str, list[Line]], ncols: int = 3) -> bytes:
    """One PNG with a small line chart per panel (title -> lines), drawn by matplotlib; same data, same bytes."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4 * ncols, 2.8 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels.items()):
        for line in lines:
            ax.plot(line.steps, line.values, marker="." if len(line.steps) < 30 else None, label=line.label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    return buf.getvalue()


def read_tsv_curve(text: str) -> tuple[str, list[float], list[float]]:
    """A dvclive plots TSV (columns step, <metric>, ...) -> (metric, steps, values)."""
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    if not rows:
        return "", [], []
    metric = next(k for k in rows[0] if k not in ("step", "timestamp"))
    return metric, [float(r["step"]) for r in rows], [float(r[metric]) for r in rows]


def live_curves(live_dir: Path) -> dict[str, list[Line]]:
    """dvclive/<model>/plots/metrics/{train,val}/<metric>.tsv (and top-level ones such as lr) -> one panel
    per metric with a train and a val line. The epoch counter is not a curve."""
    panels: dict[str, list[Line]] = {}
    root = live_dir / "plots" / "metrics"
    for tsv in sorted(root.rglob("*.tsv")):
        rel = tsv.relative_to(root)
        if rel.stem == "epoch":
            continue
        metric, steps, values = read_tsv_curve(tsv.read_text())
        if steps:
            panels.setdefault(rel.stem, []).append(Line(rel.parent.name if rel.parent.name else metric,
                                                        steps, values))
    return panels


# ---------------------------------------------------------------- run report sections
def params_section(params: Params) -> str:
    current, defaults = tables.flat_params(to_dict(params)), tables.flat_params(to_dict(Params()))
    changed = [k for k in current if current[k] != defaults.get(k)]
    rows = [[f"<code>{esc(k)}</code>", esc(fmt(v)), esc(fmt(defaults.get(k))), "≠" if k in changed else ""]
            for k, v in current.items()]
    classes = ["changed" if k in changed else "" for k in current]
    return (f"<p>{len(changed)} of {len(current)} values differ from the schema's defaults "
            f"(<code>python -m videogpt.config</code>); they are highlighted and marked ≠.</p>"
            + table(["key", "value", "default", "changed"], rows, classes))


def samples_section(samples_dir: Path) -> str:
    grid = samples_dir / "grid.gif"
    if not grid.is_file():
        return "<p class=note>no samples yet (run the sample stage)</p>"
    return (f"<figure>{img(grid.read_bytes(), 'image/gif', 'generated videos')}"
            f"<figcaption>Generated videos (<code>{esc(grid)}</code>), one per cell, looping.</figcaption></figure>")


def recon_gif(vqvae_dir: Path, clips_path: Path, n: int = N_RECON_CLIPS) -> tuple[bytes, int]:
    """Animated GIF of n test clips (evenly spread over the split; top row) above their VQ-VAE reconstructions
    (bottom row). Deterministic: the VQ-VAE runs in eval mode on the CPU. Returns (GIF bytes, clips shown)."""
    from videogpt.checkpoint import load_vqvae
    from videogpt.data.clip_store import clips_array, read_clips_at, store_attrs
    from videogpt.sampling import tokens_to_videos, videos_to_tokens
    from videogpt.visualize import encode_gif, upscale, video_grid

    n_test = clips_array(clips_path, "test").shape[0]
    index = np.unique(np.linspace(0, n_test - 1, num=min(n, n_test)).round().astype(int))
    real = read_clips_at(clips_path, "test", index)
    vqvae = load_vqvae(vqvae_dir)
    recon = tokens_to_videos(vqvae, videos_to_tokens(vqvae, real, batch_size=len(real)), batch_size=len(real))
    grid = video_grid(np.concatenate([real, recon]), ncols=len(real))
    fps = store_attrs(clips_path).get("fps") or 8
    return encode_gif(upscale(grid, max(1, SHOWN_WIDTH // grid.shape[2])), fps), len(real)


def recon_section(vqvae_dir: Path, clips_path: Path) -> str:
    if not (vqvae_dir / "config.json").is_file():
        return "<p class=note>no VQ-VAE yet (run the train_vqvae stage)</p>"
    gif, n = recon_gif(vqvae_dir, clips_path)
    return (f"<figure>{img(gif, 'image/gif', 'real clips and reconstructions')}<figcaption>Top: {n} real test "
            "clips, evenly spread over the test split. Bottom: their VQ-VAE reconstructions.</figcaption></figure>")


def curves_section(live_dirs: dict[str, Path]) -> str:
    parts = []
    for model, live_dir in live_dirs.items():
        panels = live_curves(live_dir)
        if not panels:
            parts.append(f"<p class=note>{esc(model)}: no curves in {esc(live_dir)}</p>")
            continue
        parts.append(f"<figure>{img(chart_png(panels), 'image/png', f'{model} training curves')}<figcaption>"
                     f"{esc(model)}: train and validation (= test split) curves from <code>{esc(live_dir)}</code>"
                     "</figcaption></figure>")
    return "".join(parts)


def metrics_section(root: Path, metrics_files: list[Path]) -> str:
    """One table per metrics file (paths relative to `root`): each metric, its value and its protocol."""
    parts = []
    for rel in metrics_files:
        if not (root / rel).is_file():
            parts.append(f"<p class=note><code>{esc(rel)}</code>: not written yet</p>")
            continue
        rows = metric_rows(json.loads((root / rel).read_text()))
        parts.append(f"<h3><code>{esc(rel)}</code></h3>" + table(
            ["metric", "value", "protocol"],
            [[f"<code>{esc(n)}</code>", esc(v), f"<span class=protocol>{esc(p or 'not recorded in the file')}</span>"]
             for n, v, p in rows]))
    return "".join(parts)


def data_section(clips_path: Path, manifest: Path, rejected: Path) -> str:
    from videogpt.data.clip_store import read_labels, store_attrs, store_splits

    class_names = list(store_attrs(clips_path).get("class_names") or [])
    splits = store_splits(clips_path)
    counts = {s: Counter(int(x) for x in read_labels(clips_path, s)) for s in splits}
    labels = sorted(set().union(*counts.values()))
    name = {-1: "(no class)", **dict(enumerate(class_names))}
    videos = Counter()
    if manifest.is_file():
        with open(manifest, newline="") as fh:
            videos = Counter(split for split, _ in {(r["split"], r["source"]) for r in csv.DictReader(fh)})
    rows = [[esc(name.get(lab, lab))] + [str(counts[s][lab]) for s in splits] for lab in labels]
    rows.append(["<b>all clips</b>"] + [f"<b>{sum(counts[s].values())}</b>" for s in splits])
    rows.append(["source videos"] + [str(videos.get(s, 0)) for s in splits])
    out = (f"<p>Clip store <code>{esc(clips_path)}</code>: clips per split and class.</p>"
           + table(["class"] + splits, rows))
    rejects = []
    if rejected.is_file():
        with open(rejected, newline="") as fh:
            rejects = list(csv.DictReader(fh))
    if not rejects:
        return out + f"<p>Rejected inputs: none (<code>{esc(rejected)}</code>).</p>"
    by_reason = Counter(r["reason"] for r in rejects)
    examples = {}
    for r in rejects:
        examples.setdefault(r["reason"], r["source"])
    return out + (f"<p>Rejected inputs: {len(rejects)} files (<code>{esc(rejected)}</code>), by reason:</p>"
                  + table(["reason", "files", "for example"],
                          [[esc(k), str(v), f"<code>{esc(examples[k])}</code>"] for k, v in by_reason.most_common()]))


def build_report(params: Params, root: str | Path = ".", out: str | Path | None = None) -> Path:
    """Write the run's report (default <root>/reports/index.html) from the artifacts under `root`."""
    root = Path(root)
    out = Path(out) if out is not None else root / paths.REPORT_HTML
    sections = [
        ("Samples", samples_section(root / paths.SAMPLES)),
        ("Reconstructions", recon_section(root / paths.VQVAE_DIR, root / paths.CLIPS)),
        ("Training curves", curves_section({"VQ-VAE": root / paths.VQVAE_LIVE, "prior": root / paths.PRIOR_LIVE})),
        ("Metrics", metrics_section(root, [paths.VQVAE_METRICS, paths.PRIOR_METRICS, paths.EVAL_METRICS])),
        ("Data", data_section(root / paths.CLIPS, root / paths.MANIFEST, root / paths.REJECTED)),
        ("Params", params_section(params)),
    ]
    write_text(out, page("VideoGPT run report", sections, "Everything is embedded in this file; it loads nothing."))
    return out


# ---------------------------------------------------------------- experiments page
def plots_diff(repo: str | Path, revs: list[str]) -> dict[str, dict[str, Line]]:
    """Training curves of several revisions through `dvc plots diff --json`: {tsv path: {rev: Line}}.
    DVC reads each revision's dvclive files from git (they are cache: false outs), so no checkout is needed."""
    cmd = [tables.dvc_executable(), "plots", "diff", *revs, "--json"]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=tables.dvc_env())
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed in {repo}: {proc.stderr.strip()}")
    curves: dict[str, dict[str, Line]] = {}
    for path, plots in json.loads(proc.stdout).get("data", {}).items():
        for plot in plots:
            metric = Path(path).stem
            for point in plot.get("content", {}).get("data", {}).get("values", []):
                line = curves.setdefault(path, {}).setdefault(point["rev"], Line(point["rev"], [], []))
                line.steps.append(float(point["step"]))
                line.values.append(float(point[metric]))
    return curves


def differing(flat_by_name: dict[str, dict]) -> list[str]:
    """Keys whose value is not the same in every record (absent counts as a value)."""
    keys = dict.fromkeys(k for flat in flat_by_name.values() for k in flat)
    return [k for k in keys if len({json.dumps(flat.get(k), sort_keys=True) for flat in flat_by_name.values()}) > 1]


def metric_values(record: tables.Record) -> dict[str, object]:
    """{"<file>: <metric>": value} of one record, protocols and descriptions left out."""
    out = {}
    for file, tree in sorted(record.metrics.items()):
        for name, value, _ in metric_rows(tree):
            out[f"{file}: {name}"] = value
    return out


def experiments_page(records: list[tables.Record], skipped: list[str], curves: dict[str, dict[str, Line]]) -> str:
    names = [f"{r.name} (baseline)" if r.kind == "baseline" else r.name for r in records]
    params = {n: tables.flat_params(r.params) for n, r in zip(names, records)}
    keys = differing(params)
    param_rows = [[f"<code>{esc(k)}</code>"] + [esc(fmt(params[n].get(k, "-"))) for n in names] for k in keys]
    values = {n: metric_values(r) for n, r in zip(names, records)}
    metric_keys = list(dict.fromkeys(k for v in values.values() for k in v))
    metric_rows_ = [[f"<code>{esc(k)}</code>"] + [esc(values[n].get(k, "-")) for n in names] for k in metric_keys]
    label = {r.rev: n for n, r in zip(names, records)}
    panels = {}
    for path, by_rev in curves.items():
        if Path(path).stem == "epoch":
            continue
        title = "/".join(Path(path).parts[1:2] + Path(path).parts[-2:]).removesuffix(".tsv").replace("/metrics", "")
        panels[title] = [Line(label.get(rev, rev), line.steps, line.values) for rev, line in by_rev.items()]
    sections = [
        ("Params that differ", (table(["param"] + names, param_rows) if keys
                                else "<p>All experiments share the same params.</p>")),
        ("Metrics", table(["metric"] + names, metric_rows_) + "<p class=note>Protocols: see each run's report "
                    "(reports/index.html); FVD values are comparable only under the same protocol.</p>"),
        ("Training curves", img(chart_png(panels), "image/png", "training curves of every experiment") if panels
         else "<p class=note>no training curves in these revisions</p>"),
    ]
    if skipped:
        sections.append(("Not shown", "<ul>" + "".join(f"<li>{esc(s)}</li>" for s in skipped) + "</ul>"))
    return page("VideoGPT experiments", sections, f"{len(records)} experiments from `dvc exp show`.")


def build_experiments_page(repo: str | Path = ".", out: str | Path | None = None) -> Path:
    """Write <repo>/reports/experiments.html comparing the experiments that `dvc exp show --json` lists."""
    records, skipped = tables.load_records(tables.dvc_exp_show(repo))
    curves = plots_diff(repo, [r.rev for r in records]) if records else {}
    out = Path(out) if out is not None else Path(repo) / paths.EXPERIMENTS_HTML
    write_text(out, experiments_page(records, skipped, curves))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("page", nargs="?", choices=["run", "experiments"], default="run")
    ap.add_argument("--repo", default=".", help="repository root (default: here)")
    ap.add_argument("--out", default=None, help="output file (default reports/index.html or reports/experiments.html)")
    args = ap.parse_args(argv)
    if args.page == "experiments":
        print(build_experiments_page(args.repo, args.out))
    else:
        print(build_report(load(Path(args.repo) / "params.yaml"), args.repo, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
