"""Paper-shaped tables (VideoGPT Tables 3-6) from DVC experiments.

    python -m pipeline.tables prior_size                 # runs `dvc exp show --json` in the repo
    python -m pipeline.tables all --json exp_show.json   # or reads a saved payload
    -> reports/tables/<table>.md and <table>.csv (written atomically), markdown printed

A table holds only comparable runs: the baseline commit and the finished experiments (and the workspace
when it differs from them) whose params equal the baseline's in everything but the table's swept params and
the seeds (SEED_KEYS); any other run is left out and named with the keys that differ. One row per value of
the swept params, sorted by it: the mean ± sample std over its runs (seeds) for every column, the spread over
FVD trials shown separately. Each column's numbers come from one protocol (the baseline's): a number measured
under another is left out with the differing protocol keys, never averaged. Queued, running and failed
experiments are not rows; the table names them below. A null FVD is "n/a" with its reason as a footnote; a
metric that is absent is "-" (with the file's error, if any).

What `dvc exp show --json` (DVC 3.67) returns, as parsed here: a list of commits, the first
with rev "workspace". Each is {rev, name, data, error, experiments}; experiments is null or a
list of {name, executor, revs: [state]}, where a state has the commit's shape and executor is
null once an experiment finished, else {state: queued|running|failed, ...}. A state's data holds
params {"params.yaml": {"data": {nested}}} and metrics {"metrics/eval.json": {"data": {nested}}
or {"error": {type, msg}}}. DVC drops null leaves and lists from metrics: an FVD entry written as
{"mean": null, "trials": [null], "reason": ...} comes back as {"reason": ...}.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.paths import EVAL_METRICS, PRIOR_METRICS, VQVAE_METRICS
from videogpt.fileio import write_text

PARAMS_FILE = "params.yaml"
VQVAE, PRIOR, EVAL = str(VQVAE_METRICS), str(PRIOR_METRICS), str(EVAL_METRICS)
# What the table's heading says of a protocol (the whole protocol decides what is comparable)
PROTOCOL_SUMMARY = ("fvd_protocol", "i3d_protocol", "n_real", "n_generated", "n_trials", "frames", "resolution",
                    "weights_sha256", "condition", "n", "split")


@dataclass
class Record:
    """One row candidate: an experiment, the baseline commit or the workspace."""
    name: str
    rev: str
    kind: str                      # "experiment" | "baseline" | "workspace"
    params: dict                   # params.yaml, nested as in the file
    metrics: dict                  # metrics file path -> its nested content
    errors: dict = field(default_factory=dict)   # metrics file path -> why it could not be read
    timestamp: str | None = None


# ---------------------------------------------------------------- loading
def dvc_executable() -> str:
    """The dvc of this interpreter's environment (which may not be on PATH), else the one on PATH."""
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.exists() else (shutil.which("dvc") or "dvc")


def dvc_env() -> dict:
    """The environment for running dvc: no usage analytics, and this environment's dvc first on PATH (a queue
    worker started by `dvc queue start` runs `dvc` from PATH, which may lack it when the venv is not activated)."""
    bin_dir = str(Path(dvc_executable()).parent)
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}


def dvc_exp_show(repo: str | Path = ".", *, all_commits: bool = False, dvc: str | None = None) -> list:
    """The parsed output of `dvc exp show --json` run in `repo`."""
    cmd = [dvc or dvc_executable(), "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    proc = subprocess.run(cmd, cwd=repo, env=dvc_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed in {repo}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def _record(state: dict, kind: str, name: str) -> Record:
    data = state["data"]
    params_file = data.get("params", {}).get(PARAMS_FILE, {})
    metrics, errors = {}, {}
    for path, entry in data.get("metrics", {}).items():
        if entry.get("error"):
            err = entry["error"]
            errors[path] = f"{path} unreadable: {err.get('type') or 'error'} {err.get('msg', '')}".strip()
        else:
            metrics[path] = entry.get("data", {})
    return Record(name=name, rev=state.get("rev") or "", kind=kind, params=params_file.get("data", {}), metrics=metrics,
                  errors=errors, timestamp=data.get("timestamp"))


def load_records(payload: list) -> tuple[list[Record], list[str]]:
    """Rows from a `dvc exp show --json` payload, and "name (why)" for each entry that is no row.

    The workspace is dropped when its params and metrics equal another row's (after `dvc exp run`
    it holds the last experiment's results; after `dvc repro` the baseline's)."""
    records, skipped, workspace = [], [], None
    for commit in payload:
        is_ws = commit.get("rev") == "workspace"
        if commit.get("error") or not commit.get("data"):
            skipped.append(f"{commit.get('name') or commit.get('rev', '?')[:7]} (unreadable commit)")
            continue
        rec = (_record(commit, "workspace", "workspace") if is_ws
               else _record(commit, "baseline", commit.get("name") or commit.get("rev", "?")[:7]))
        if is_ws:
            workspace = rec
        else:
            records.append(rec)
        for exp_range in commit.get("experiments") or []:
            revs = exp_range.get("revs") or []
            state = revs[0] if revs else {}
            executor = exp_range.get("executor") or {}
            name = exp_range.get("name") or state.get("name") or state.get("rev", "?")[:7]
            status = executor.get("state")
            if status not in (None, "success"):
                code = (executor.get("local") or {}).get("returncode")
                skipped.append(f"{name} ({status}{'' if code is None else f', exit {code}'})")
            elif state.get("error"):
                skipped.append(f"{name} (failed: {state['error'].get('msg', 'error')})")
            elif not state.get("data"):
                skipped.append(f"{name} (no data)")
            else:
                records.append(_record(state, "experiment", name))
    if workspace and not any(r.params == workspace.params and r.metrics == workspace.metrics for r in records):
        records.insert(0, workspace)
    return records, skipped


# ---------------------------------------------------------------- table specs
def _get(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def param_key(dotted: str, text: Callable[[Any], str] = str) -> Callable[[dict], tuple]:
    """Row key from one param: (sort key, cell text); rows without the param sort last."""
    def key(params: dict) -> tuple:
        v = _get(params, dotted)
        return ((1, 0), "-") if v is None else ((0, v), text(v))
    return key


def _latent_grid(params: dict) -> tuple[int, int, int] | None:
    """(t, h, w) of the latent grid, from data.sequence_length, data.resolution, vqvae.downsample."""
    frames, res, ds = (_get(params, k) for k in ("data.sequence_length", "data.resolution", "vqvae.downsample"))
    if frames is None or res is None or not isinstance(ds, list) or len(ds) != 3:
        return None
    return frames // ds[0], res // ds[1], res // ds[2]


def latent_key(params: dict) -> tuple:
    """t x h x w of the latent grid; sorted by number of latents, then t (the order of the paper's Table 5)."""
    grid = _latent_grid(params)
    if grid is None:
        return (1, 0, 0), "-"
    t, h, w = grid
    return (0, t * h * w, t), f"{t} × {h} × {w}"


def codebooks_key(params: dict) -> tuple:
    """t x h x w x C (C = vqvae.n_codebooks, 1 when absent); sorted by C (the order of the paper's Table 7)."""
    grid, C = _latent_grid(params), _get(params, "vqvae.n_codebooks") or 1
    if grid is None:
        return (1, 0), "-"
    return (0, C), " × ".join(map(str, (*grid, C)))


@dataclass(frozen=True)
class Column:
    header: str
    file: str      # metrics file as DVC names it
    key: str       # dotted path inside it; a {value|mean, std, trials, reason, protocol} entry is unwrapped
    fmt: str


@dataclass(frozen=True)
class TableSpec:
    title: str
    key_header: str
    key: Callable[[dict], tuple]
    columns: tuple[Column, ...]
    swept: tuple[str, ...]         # the params the table varies; every other param (but the seeds) must match


# Bits/dim: the prior's report on the test split (VideoGPT has no validation split, so the "val" metric and
# evaluate's test bits/dim measure the same thing): one column, from the stage that trains the prior.
BPD = Column("bits/dim (↓)", PRIOR, "val_bits_per_dim", ".3f")
FVD = Column("FVD (↓)", EVAL, "fvd", ".1f")
R_FVD = Column("R-FVD (↓)", EVAL, "r_fvd", ".1f")
FVD_STAR = Column("FVD* (↓)", EVAL, "fvd_star", ".1f")
NMSE = Column("NMSE (↓)", VQVAE, "nmse", ".4f")   # the VQ-VAE's own report: Table 3 needs no prior
# The run's own classifier (stage train_classifier), standing in for the paper's IS and FVD without a download; its
# protocol names the classifier's weights_sha256, so only numbers of one classifier share a column
CLS_IS = Column("classifier IS (↑)", EVAL, "classifier.is", ".2f")
CLS_FD = Column("classifier FD (↓)", EVAL, "classifier.fd", ".1f")

TABLES = {
    "prior_size": TableSpec("Prior size (paper Table 4)", "Transformer Layers", param_key("prior.n_layer"),
                            (BPD, FVD, CLS_IS, CLS_FD), swept=("prior.n_layer",)),
    "codebook_size": TableSpec("Number of codes (paper Table 6)", "# of Codes", param_key("vqvae.n_codes"),
                               (R_FVD, FVD, BPD, CLS_IS, CLS_FD), swept=("vqvae.n_codes",)),
    "latent_size": TableSpec("Latent size (paper Table 5)", "Latent Size", latent_key,
                             (R_FVD, FVD, FVD_STAR, CLS_IS, CLS_FD),
                             swept=("vqvae.downsample",)),
    # the paper matched parameters by giving the VQ-VAE without attention more residual blocks
    "attention": TableSpec("Axial attention in the VQ-VAE (paper Table 3)", "VQ-VAE Architecture",
                           param_key("vqvae.attention", lambda v: "With Attention" if v else "No Attention"),
                           (NMSE, R_FVD), swept=("vqvae.attention", "vqvae.n_res_layers")),
    # the rows change the downsampling with the codebooks, to hold t x h x w x C constant
    "codebooks": TableSpec("Number of codebooks (paper Table 7)", "Latent Size", codebooks_key, (R_FVD, FVD, BPD),
                           swept=("vqvae.n_codebooks", "vqvae.downsample")),
}

# Seeds: a row is the mean over runs that differ only in these. data.split_seed, default_data.seed and
# eval.seed are not among them: they change the data or the FVD's real clips, so they must match.
SEED_KEYS = ("seed", "vqvae.seed", "prior.seed", "sample.seed")


# ---------------------------------------------------------------- building
def flat_params(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} of nested params; lists are leaves."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flat_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def fixed_params(rec: Record, spec: TableSpec) -> dict[str, Any]:
    """The params that must be equal for two runs to share a table: all but the swept ones and the seeds."""
    return {k: v for k, v in flat_params(rec.params).items() if k not in spec.swept and k not in SEED_KEYS}


def _differences(a: dict, b: dict) -> list[str]:
    """"key: a vs b" for every key whose value differs (absent is a value)."""
    return [f"{k}: {json.dumps(a.get(k))} vs {json.dumps(b.get(k))}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _label(rec: Record) -> str:
    return f"{rec.name} (baseline)" if rec.kind == "baseline" else rec.name


def comparable_runs(records: list[Record], spec: TableSpec) -> tuple[list[Record], list[str]]:
    """The runs that may share one table, and "name (differs from <reference> in key: a vs b)" for the others.

    The reference is the baseline commit (else the first record): a row never mixes in a run trained with other
    params than the swept ones and the seeds. A run whose params equal an earlier one's, seeds included, is
    the same run measured twice (e.g. the workspace after `dvc repro`) and is not counted again."""
    if not records:
        return [], []
    reference = next((r for r in records if r.kind == "baseline"), records[0])
    ref = fixed_params(reference, spec)
    kept, refused, seen = [], [], []
    for rec in records:
        diff = _differences(fixed_params(rec, spec), ref)
        if diff:
            refused.append(f"{_label(rec)} (differs from {reference.name} in {'; '.join(diff)})")
        elif any(rec.params == other.params for other in seen):
            refused.append(f"{_label(rec)} (the same params and seeds as "
                           f"{_label(next(o for o in seen if o.params == rec.params))})")
        else:
            kept.append(rec)
            seen.append(rec)
    return kept, refused


@dataclass
class Measure:
    """One run's number for one column."""
    value: float | None
    trial_std: float | None        # spread over FVD trials, when the entry has several
    note: str | None               # why the value is missing
    protocol: dict | None


def measure(rec: Record, col: Column) -> Measure:
    tree = rec.metrics.get(col.file)
    node = _get(tree, col.key)
    protocol = tree.get("protocol") if isinstance(tree, dict) else None
    trial_std = None
    if isinstance(node, dict):  # {"mean", "std", "trials", "reason", "protocol"} or {"value", ...}; DVC drops nulls
        protocol = node.get("protocol", protocol)
        value, reason = node.get("mean", node.get("value")), node.get("reason")
        if value is None:
            return Measure(None, None, reason or f"{col.file}: no {col.key}", protocol)
        n_trials = node.get("n_trials") or len(node.get("trials") or ())  # DVC drops lists from metrics
        if n_trials > 1 and isinstance(node.get("std"), (int, float)):
            trial_std = float(node["std"])
        node = value
    if not isinstance(node, (int, float)) or isinstance(node, bool):
        return Measure(None, None, rec.errors.get(col.file) or f"{col.file}: no {col.key}", protocol)
    return Measure(float(node), trial_std, None, protocol)


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def aggregate(runs: list[Record], col: Column, reference_protocol: dict | None) -> dict:
    """The cell of one row: mean ± std over the runs (seeds) whose protocol is the column's reference one.

    A number measured under another protocol is never averaged with the others nor shown beside them: it is
    left out with a note naming the protocol keys that differ."""
    measures = [(r, measure(r, col)) for r in runs]
    usable, notes = [], []
    for rec, m in measures:
        if m.value is None:
            notes.append(m.note)
        elif reference_protocol is not None and m.protocol is not None and m.protocol != reference_protocol:
            diff = _differences(flat_params(m.protocol), flat_params(reference_protocol))
            notes.append(f"{_label(rec)}: measured under another protocol than the table's ({'; '.join(diff)}), "
                         "left out")
        else:
            usable.append(m)
    note = "; ".join(dict.fromkeys(n for n in notes if n)) or None
    if not usable:
        return {"text": "-" if all(m.note and "unreadable" in m.note for _, m in measures) else "n/a",
                "value": None, "std": None, "trial_std": None, "n": 0, "note": note}
    values = [m.value for m in usable]
    mean = sum(values) / len(values)
    std = _std(values) if len(values) > 1 else None
    trial_stds = [m.trial_std for m in usable if m.trial_std is not None]
    trial_std = sum(trial_stds) / len(trial_stds) if trial_stds else None
    text = format(mean, col.fmt) + (f" ± {format(std, col.fmt)}" if std is not None else "")
    if trial_std is not None:
        text += f" (trials ± {format(trial_std, col.fmt)})"
    if len(usable) < len(runs):
        note = f"{len(usable)} of {len(runs)} runs: {note}"
    return {"text": text, "value": mean, "std": std, "trial_std": trial_std, "n": len(values), "note": note}


def _run_order(rec: Record) -> tuple:
    """Within a row: the baseline first, then by seeds."""
    flat = flat_params(rec.params)
    return rec.kind != "baseline", json.dumps([flat.get(k) for k in SEED_KEYS]), rec.name


@dataclass
class Table:
    name: str
    title: str
    header: list[str]
    rows: list[list[dict]]          # cells: {"text", "value", "note", ...}; note is a footnote text or None
    protocols: dict[str, dict]      # column header -> the protocol its numbers were measured under
    skipped: list[str]              # not finished (queued, running, failed)
    refused: list[str]              # finished, but not comparable with the table's runs
    n_metrics: int                  # row layout: key, n_metrics measured cells, runs, experiments, then any others


def build_table(name: str, records: list[Record], skipped: list[str] = ()) -> Table:
    """One row per value of the swept params: mean ± std over the runs that differ only in their seeds."""
    spec = TABLES[name]
    kept, refused = comparable_runs(records, spec)
    groups: dict[tuple, list[Record]] = {}
    for rec in kept:
        groups.setdefault(spec.key(rec.params), []).append(rec)
    protocols = {}
    by_preference = sorted(kept, key=lambda r: r.kind != "baseline")  # the baseline's protocol, else the first
    for col in spec.columns:
        protocols[col.header] = next((m.protocol for m in (measure(r, col) for r in by_preference)
                                      if m.value is not None and m.protocol is not None), None)
    rows = []
    for (_, key_text), runs in sorted(groups.items(), key=lambda kv: kv[0][0]):
        runs = sorted(runs, key=_run_order)
        names = ", ".join(_label(r) for r in runs)
        rows.append([{"text": key_text, "value": key_text, "note": None},
                     *(aggregate(runs, c, protocols[c.header]) for c in spec.columns),
                     {"text": str(len(runs)), "value": len(runs), "note": None},
                     {"text": names, "value": names, "note": None}])
    header = [spec.key_header, *(c.header for c in spec.columns), "Runs", "Experiments"]
    return Table(name, spec.title, header, rows, {k: v for k, v in protocols.items() if v}, list(skipped), refused,
                 len(spec.columns))


# ---------------------------------------------------------------- rendering
def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _protocol_text(proto: dict) -> str:
    shown = {k: proto[k] for k in PROTOCOL_SUMMARY if proto.get(k) is not None}
    if isinstance(shown.get("weights_sha256"), str):
        shown["weights_sha256"] = shown["weights_sha256"][:12]
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def render_markdown(table: Table) -> str:
    notes: list[str] = []                         # distinct footnote texts, numbered in order of use

    def cell(c: dict) -> str:
        if not c["note"]:
            return _md(c["text"])
        if c["note"] not in notes:
            notes.append(c["note"])
        return f"{_md(c['text'])} [^{notes.index(c['note']) + 1}]"

    lines = [f"### {table.title}", "",
             "Each row: mean ± std over its runs (seeds; sample std), the spread over FVD trials in brackets. "
             "Numbers measured under another protocol than the column's are left out, never averaged.", ""]
    distinct: list[tuple[dict, list[str]]] = []
    for header, proto in table.protocols.items():
        for p, headers in distinct:
            if p == proto:
                headers.append(header)
                break
        else:
            distinct.append((proto, [header]))
    lines += [f"- protocol of {', '.join(h)}: {_protocol_text(p)}" for p, h in distinct]
    lines += ["", "| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    if not table.rows:
        lines.append("| " + " | ".join(["-"] * len(table.header)) + " |")
    if notes:
        lines += [""] + [f"[^{i}]: {_md(n)}" for i, n in enumerate(notes, 1)]
    if table.refused:
        lines += ["", "Not comparable, left out: " + ", ".join(_md(s) for s in table.refused) + "."]
    if table.skipped:
        lines += ["", "Not shown: " + ", ".join(_md(s) for s in table.skipped) + "."]
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    """The same rows with raw values: empty where missing or null, reasons in a notes column; each metric
    column is followed by "<column> seed std" and, where FVD trials were run, "<column> trial std"."""
    metrics = range(1, 1 + table.n_metrics)  # the swept key first; after the metrics "Runs", "Experiments", others
    tail = range(1 + table.n_metrics, len(table.header))
    with_trials = {i: any(row[i].get("trial_std") is not None for row in table.rows) for i in metrics}
    head = [table.header[0]]
    for i in metrics:
        head += [table.header[i], f"{table.header[i]} seed std"] + ([f"{table.header[i]} trial std"]
                                                                     if with_trials[i] else [])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head + [table.header[i] for i in tail] + ["notes"])

    def raw(v):
        return "" if v is None else v

    for row in table.rows:
        cells = [row[0]["value"]]
        for i in metrics:
            cells += [raw(row[i]["value"]), raw(row[i].get("std"))] + ([raw(row[i].get("trial_std"))]
                                                                        if with_trials[i] else [])
        cells += [raw(row[i]["value"]) for i in tail]
        writer.writerow(cells + ["; ".join(dict.fromkeys(c["note"] for c in row if c["note"]))])
    return buf.getvalue()


def write_table(table: Table, out_dir: str | Path) -> str:
    """Write <out_dir>/<name>.md and .csv atomically; return the markdown."""
    md = render_markdown(table)
    write_text(Path(out_dir) / f"{table.name}.md", md)
    write_text(Path(out_dir) / f"{table.name}.csv", render_csv(table))
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.tables", description=__doc__.split("\n\n")[0])
    ap.add_argument("table", choices=[*TABLES, "all"])
    ap.add_argument("--out-dir", default="reports/tables")
    ap.add_argument("--json", metavar="FILE", help="a saved `dvc exp show --json` output ('-' = stdin) "
                                                   "instead of running dvc")
    ap.add_argument("--repo", default=".", help="where to run dvc (default: here)")
    ap.add_argument("--all-commits", action="store_true", help="experiments of every commit, not only HEAD")
    args = ap.parse_args(argv)
    if args.json:
        payload = json.loads(sys.stdin.read() if args.json == "-" else Path(args.json).read_text(encoding="utf-8"))
    else:
        payload = dvc_exp_show(args.repo, all_commits=args.all_commits)
    records, skipped = load_records(payload)
    for name in (TABLES if args.table == "all" else [args.table]):
        print(write_table(build_table(name, records, skipped), args.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
