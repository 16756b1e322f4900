"""Paper-shaped tables (VideoGPT Tables 3-6) from DVC experiments.

    python -m pipeline.tables prior_size                 # runs `dvc exp show --json` in the repo
    python -m pipeline.tables all --json exp_show.json   # or reads a saved payload
    -> reports/tables/<table>.md and <table>.csv (written atomically), markdown printed

One row per finished experiment plus the baseline commit (and the workspace when it differs
from both), sorted by the swept parameter; rows that share a value are all listed. Queued,
running and failed experiments are not rows; the table names them below. A null FVD is "n/a"
with its reason as a footnote; a metric that is absent is "-" (with the file's error, if any). A metric
measured over several trials ({"mean", "std", "trials"}, as FVD with eval.n_trials > 1) shows as
"mean ± std" (population std); the CSV gives the mean and a "<column> std" column beside it.

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

from pipeline.paths import EVAL_METRICS, PRIOR_METRICS
from videogpt.fileio import write_text

PARAMS_FILE = "params.yaml"
PRIOR, EVAL = str(PRIOR_METRICS), str(EVAL_METRICS)
PROTOCOL_KEYS = ("i3d_protocol", "n_real", "n_generated", "frames", "resolution")  # FVDs differing here are not comparable


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
    """The environment for running dvc: no usage analytics."""
    return {**os.environ, "DVC_NO_ANALYTICS": "1"}


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


def latent_key(params: dict) -> tuple:
    """t x h x w of the latent grid, from data.sequence_length, data.resolution, vqvae.downsample;
    sorted by number of latents, then t (the order of the paper's Table 5)."""
    frames, res, ds = (_get(params, k) for k in ("data.sequence_length", "data.resolution", "vqvae.downsample"))
    if frames is None or res is None or not isinstance(ds, list) or len(ds) != 3:
        return (1, 0, 0), "-"
    t, h, w = frames // ds[0], res // ds[1], res // ds[2]
    return (0, t * h * w, t), f"{t} × {h} × {w}"


@dataclass(frozen=True)
class Column:
    header: str
    file: str      # metrics file as DVC names it
    key: str       # dotted path inside it; a {value, reason} entry is unwrapped
    fmt: str


@dataclass(frozen=True)
class TableSpec:
    title: str
    key_header: str
    key: Callable[[dict], tuple]
    columns: tuple[Column, ...]


VAL_BPD = Column("val bits/dim", PRIOR, "val_bits_per_dim", ".3f")
TEST_BPD = Column("test bits/dim", EVAL, "test_bits_per_dim", ".3f")
FVD = Column("FVD (↓)", EVAL, "fvd", ".1f")
R_FVD = Column("R-FVD (↓)", EVAL, "r_fvd", ".1f")
FVD_STAR = Column("FVD* (↓)", EVAL, "fvd_star", ".1f")
NMSE = Column("NMSE (↓)", EVAL, "recon.nmse", ".4f")

TABLES = {
    "prior_size": TableSpec("Prior size (paper Table 4)", "Transformer Layers", param_key("prior.n_layer"),
                            (VAL_BPD, TEST_BPD, FVD)),
    "codebook_size": TableSpec("Number of codes (paper Table 6)", "# of Codes", param_key("vqvae.n_codes"),
                               (R_FVD, FVD, VAL_BPD, TEST_BPD)),
    "latent_size": TableSpec("Latent size (paper Table 5)", "Latent Size", latent_key, (R_FVD, FVD, FVD_STAR)),
    "attention": TableSpec("Axial attention in the VQ-VAE (paper Table 3)", "VQ-VAE Architecture",
                           param_key("vqvae.attention", lambda v: "With Attention" if v else "No Attention"),
                           (NMSE, R_FVD)),
}


# ---------------------------------------------------------------- building
@dataclass
class Table:
    name: str
    title: str
    header: list[str]
    rows: list[list[dict]]          # cells: {"text", "value", "note"}; note is a footnote text or None
    protocols: list[tuple[dict, list[str]]]   # distinct FVD protocols and the rows using each
    skipped: list[str]


def _cell(rec: Record, col: Column) -> dict:
    node = _get(rec.metrics.get(col.file), col.key)
    std = None
    if isinstance(node, dict):  # {"mean", "std", "trials", "reason", ...} or {"value", ...}; DVC drops null leaves
        value, note = node.get("mean", node.get("value")), node.get("reason")
        if value is None:
            return {"text": "n/a", "value": None, "note": note}
        n_trials = node.get("n_trials") or len(node.get("trials") or ())  # DVC drops lists from metrics
        if n_trials > 1 and isinstance(node.get("std"), (int, float)):
            std = node["std"]
        node = value
    if node is None:
        return {"text": "-", "value": None, "note": rec.errors.get(col.file)}
    text = format(node, col.fmt) if isinstance(node, (int, float)) else str(node)
    if std is not None:
        text += f" ± {format(std, col.fmt)}"
    return {"text": text, "value": node, "std": std, "note": None}


def build_table(name: str, records: list[Record], skipped: list[str] = ()) -> Table:
    spec = TABLES[name]
    order = {"baseline": 0, "experiment": 1, "workspace": 2}
    keyed = sorted(((spec.key(r.params), r) for r in records),
                   key=lambda kr: (kr[0][0], order[kr[1].kind], kr[1].timestamp or "", kr[1].name))
    rows, protocols = [], []
    for (_, key_text), rec in keyed:
        label = f"{rec.name} (baseline)" if rec.kind == "baseline" else rec.name
        rows.append([{"text": key_text, "value": key_text, "note": None},
                     *(_cell(rec, c) for c in spec.columns),
                     {"text": label, "value": label, "note": None}])
        proto = _get(rec.metrics.get(EVAL), "fvd.protocol")
        if isinstance(proto, dict):
            proto = {k: proto[k] for k in PROTOCOL_KEYS if k in proto}
            for p, names in protocols:
                if p == proto:
                    names.append(label)
                    break
            else:
                protocols.append((proto, [label]))
    header = [spec.key_header, *(c.header for c in spec.columns), "Experiment"]
    return Table(name, spec.title, header, rows, protocols, list(skipped))


# ---------------------------------------------------------------- rendering
def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _protocol_text(proto: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in proto.items())


def render_markdown(table: Table) -> str:
    notes: list[str] = []                         # distinct footnote texts, numbered in order of use

    def cell(c: dict) -> str:
        if not c["note"]:
            return _md(c["text"])
        if c["note"] not in notes:
            notes.append(c["note"])
        return f"{_md(c['text'])} [^{notes.index(c['note']) + 1}]"

    lines = [f"### {table.title}", ""]
    if len(table.protocols) == 1:
        lines += [f"FVD protocol: {_protocol_text(table.protocols[0][0])}", ""]
    elif table.protocols:
        lines += ["FVD protocols differ between rows (their FVDs are not comparable):", ""]
        lines += [f"- {_protocol_text(p)}: {', '.join(names)}" for p, names in table.protocols] + [""]
    lines += ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    if not table.rows:
        lines.append("| " + " | ".join(["-"] * len(table.header)) + " |")
    if notes:
        lines += [""] + [f"[^{i}]: {_md(n)}" for i, n in enumerate(notes, 1)]
    if table.skipped:
        lines += ["", "Not shown: " + ", ".join(_md(s) for s in table.skipped) + "."]
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    """The same rows with raw values: empty where missing or null, reasons in a notes column; a column
    with trials (mean ± std) is followed by a "<column> std" column."""
    with_std = [any(row[i].get("std") is not None for row in table.rows) for i in range(len(table.header))]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([h for h, s in zip(table.header, with_std) for h in ([h, f"{h} std"] if s else [h])] + ["notes"])
    for row in table.rows:
        cells = []
        for c, s in zip(row, with_std):
            cells += [("" if c["value"] is None else c["value"])] + (["" if c.get("std") is None else c["std"]]
                                                                    if s else [])
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
