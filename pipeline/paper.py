"""One command per paper table: queue its grid of DVC experiments (every row x every seed), run them, wait,
and write the table (mean ± std over seeds) beside the paper's own numbers.

    python -m pipeline.paper prior_size                  # --scale mini: sized for the default data on 2 CPU cores
    python -m pipeline.paper prior_size --scale paper    # the paper's rows, on a committed preset (GPUs)
    python -m pipeline.paper attention --no-run          # only queue; run later with `dvc queue start`
    -> reports/tables/<table>_<scale>.md and .csv, the markdown printed

Reading order: GRIDS (what each table runs at each scale), PAPER (the paper's numbers, spec §4), then `main`:
check the repository, reproduce the baseline, queue, run, wait, build the table (pipeline.tables) from exactly the
experiments of this grid, add the paper's columns, write.

Why the baseline is reproduced first: queued experiments run in temporary copies of the last commit, which
restore every stage the grid does not change from the DVC cache. A fresh clone has an empty cache, so without
this every row would retrain everything (a prior-size grid would retrain the VQ-VAE per row). The reproduced
baseline must equal the committed one (dvc.lock, metrics): otherwise the command stops and says what to commit,
or commits it with --commit-baseline. When every run of a grid sets some params to one value other than the
baseline's (a prior-size grid on more training videos), the stages those shared params reach but the swept ones do
not are run once more before the queue (`dvc exp run --temp` of just those stages), so that parallel runs restore
them from DVC's run-cache instead of each training its own copy.

Experiments are named `<table>-<scale>-<row>-s<seed>`; a name that already finished is reused, so running the
command again after a failure runs only what is missing. Every failed row is named with the tail of its log.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline import tables
from videogpt.fileio import write_text

# ---------------------------------------------------------------- grids


@dataclass(frozen=True)
class Grid:
    """What one table runs at one scale. Every run sets `fixed`, its row's params and one seed."""
    rows: tuple[dict[str, Any], ...]
    seed_key: str                    # the seed a row is repeated over (the training(s) the table is about)
    seeds: tuple[int, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None        # params/presets/<preset>.yaml: the committed params.yaml must be this preset
    note: str = ""


def _rows(key: str, values) -> tuple[dict[str, Any], ...]:
    return tuple({key: v} for v in values)


# Mini grids: the default data (16-frame 32x32 clips, 4x8x8 latents) on a 2-core CPU; sized from the measured
# default run (README) so the effect the paper reports has room to show: longer training than the default run,
# where depth or attention only matter once the model is past its first few hundred steps.
GRIDS: dict[str, dict[str, Grid]] = {
    "prior_size": {
        # 4x the default training videos: on the default 160 the prior overfits (train 2.07 vs test 2.34 bits/dim
        # at 600 steps) and 8 layers came out worse than 4; more data lets depth matter.
        "mini": Grid(_rows("prior.n_layer", (1, 2, 4, 8)), "prior.seed", (0, 1),
                     {"default_data.n_train": 640, "prior.max_steps": 1200},
                     note="one VQ-VAE (trained once on the 640 videos) and its tokens for every row"),
        "paper": Grid(_rows("prior.n_layer", (2, 4, 8, 16)), "prior.seed", (0,), preset="bair"),
    },
    "codebook_size": {
        "mini": Grid(_rows("vqvae.n_codes", (32, 128, 512)), "seed", (0, 1)),
        "paper": Grid(_rows("vqvae.n_codes", (256, 1024, 4096)), "seed", (0,), {"vqvae.downsample": [2, 2, 2]},
                      preset="bair", note="latent 8x32x32 as in the paper's Table 6"),
    },
    # mini: one partition of equal total latents (256), as the paper compares shapes within a partition
    "latent_size": {
        "mini": Grid(_rows("vqvae.downsample", ([4, 4, 4], [1, 8, 8], [16, 2, 2])), "seed", (0, 1),
                     note="4x8x8, 16x4x4 and 1x16x16 latents: 256 each"),
        "paper": Grid(_rows("vqvae.downsample", ([4, 4, 4], [1, 8, 8], [2, 4, 4], [16, 1, 1], [4, 2, 2], [1, 4, 4],
                                                 [8, 1, 1], [2, 2, 2], [4, 1, 1], [1, 2, 2])), "seed", (0,),
                      preset="bair"),
    },
    # the variant without attention gets one more residual block, as the paper matched parameters
    "attention": {
        "mini": Grid(({"vqvae.attention": True, "vqvae.n_res_layers": 1},
                      {"vqvae.attention": False, "vqvae.n_res_layers": 2}), "vqvae.seed", (0, 1, 2),
                     {"vqvae.max_steps": 900}),
        "paper": Grid(({"vqvae.attention": True, "vqvae.n_res_layers": 4},
                       {"vqvae.attention": False, "vqvae.n_res_layers": 5}), "vqvae.seed", (0,), preset="bair",
                      note="the paper does not say how many blocks it added: one here [inferred]"),
    },
    # total latents held constant while the codebooks multiply, as in the paper (t x h x w x C)
    "codebooks": {
        "mini": Grid(({"vqvae.n_codebooks": 1, "vqvae.downsample": [4, 4, 4]},
                      {"vqvae.n_codebooks": 2, "vqvae.downsample": [8, 4, 4]},
                      {"vqvae.n_codebooks": 4, "vqvae.downsample": [4, 8, 8]}), "seed", (0, 1),
                     note="4x8x8x1, 2x8x8x2 and 4x4x4x4 latents: 256 each"),
        "paper": Grid(({"vqvae.n_codebooks": 1, "vqvae.downsample": [2, 2, 2]},
                       {"vqvae.n_codebooks": 2, "vqvae.downsample": [1, 4, 4]},
                       {"vqvae.n_codebooks": 4, "vqvae.downsample": [2, 4, 4]},
                       {"vqvae.n_codebooks": 8, "vqvae.downsample": [4, 4, 4]}), "seed", (0,), preset="bair",
                      note="8192 latents each; every codebook keeps the preset's n_codes and embedding_dim"),
    },
}

# The paper's rows (spec §4; BAIR), in its order: (the row's label, {column header: the paper's text}).
PAPER: dict[str, tuple[tuple[str, dict[str, str]], ...]] = {
    "prior_size": (("2", {"bits/dim (↓)": "2.84", "FVD (↓)": "120.4 ± 6.0"}),
                   ("4", {"bits/dim (↓)": "2.52", "FVD (↓)": "110.0 ± 2.4"}),
                   ("8", {"bits/dim (↓)": "2.39", "FVD (↓)": "103.3 ± 2.2"}),
                   ("16", {"bits/dim (↓)": "2.05", "FVD (↓)": "103.6 ± 2.0"})),
    "codebook_size": (("256", {"R-FVD (↓)": "18.2", "FVD (↓)": "103.8 ± 3.7", "bits/dim (↓)": "1.55"}),
                      ("1024", {"R-FVD (↓)": "14.9", "FVD (↓)": "103.6 ± 2.0", "bits/dim (↓)": "2.05"}),
                      ("4096", {"R-FVD (↓)": "11.3", "FVD (↓)": "103.9 ± 5.1", "bits/dim (↓)": "2.60"})),
    "latent_size": tuple((size, {"R-FVD (↓)": r, "FVD (↓)": f, "FVD* (↓)": s}) for size, r, f, s in (
        ("4 × 16 × 16", "82.1", "135.4 ± 3.7", "81.8 ± 2.3"), ("16 × 8 × 8", "108.1", "166.9 ± 3.1", "81.6 ± 2.2"),
        ("8 × 16 × 16", "49.9", "124.7 ± 2.7", "90.2 ± 2.4"), ("1 × 64 × 64", "41.6", "126.7 ± 3.1", "98.1 ± 3.6"),
        ("4 × 32 × 32", "28.3", "104.6 ± 2.7", "90.6 ± 2.7"), ("16 × 16 × 16", "32.8", "113.4 ± 2.5", "94.9 ± 1.7"),
        ("2 × 64 × 64", "22.4", "124.3 ± 1.4", "104.4 ± 2.5"), ("8 × 32 × 32", "14.9", "103.6 ± 2.0", "94.6 ± 1.5"),
        ("4 × 64 × 64", "15.7", "109.4 ± 2.1", "102.3 ± 2.8"), ("16 × 32 × 32", "10.1", "118.4 ± 3.2", "113.8 ± 3.3"))),
    "attention": (("No Attention", {"NMSE (↓)": "0.0041", "R-FVD (↓)": "15.3"}),
                  ("With Attention", {"NMSE (↓)": "0.0033", "R-FVD (↓)": "14.9"})),
    "codebooks": tuple((size, {"R-FVD (↓)": r, "FVD (↓)": f, "bits/dim (↓)": b}) for size, r, f, b in (
        ("8 × 32 × 32 × 1", "14.9", "103.6 ± 2.0", "2.05"), ("16 × 16 × 16 × 2", "17.2", "106.3 ± 1.7", "2.41"),
        ("8 × 16 × 16 × 4", "17.7", "131.4 ± 2.9", "2.68"), ("4 × 16 × 16 × 8", "23.1", "135.7 ± 3.3", "2.97"))),
}
PAPER_SOURCE = "VideoGPT (Yan et al. 2021) on BAIR, its own protocol (FVD ± over its trials, not seeds)"

# Params a user sets for their machine or files: they may differ from the preset at --scale paper.
MACHINE_KEYS = ("data.source", "eval.i3d_weights")
MACHINE_PREFIXES = ("trainer.", "storage.")


class PaperError(RuntimeError):
    """The repository is not in a state the grid can start from; the message says what to do."""


# ---------------------------------------------------------------- runs


def _value_text(v: Any) -> str:
    """A value as `dvc exp run -S key=<text>` parses it (YAML): lists and booleans as JSON."""
    return json.dumps(v) if isinstance(v, (list, tuple, bool)) or v is None else str(v)


def _slug(row: dict[str, Any]) -> str:
    parts = []
    for k, v in row.items():
        text = "x".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v).lower()
        parts.append(f"{k.split('.')[-1]}{text}")
    return re.sub(r"[^A-Za-z0-9-]+", "", "-".join(parts)) or "row"


@dataclass(frozen=True)
class Run:
    name: str
    params: dict[str, Any]           # every -S of this run


def plan(table: str, scale: str, grid: Grid, *, rows=None, seeds=None, extra: dict | None = None) -> list[Run]:
    """The grid's runs: every row x every seed, each with the grid's fixed params and `extra` (--set)."""
    chosen = grid.rows if rows is None else tuple(r for r in grid.rows if _slug(r) in rows or
                                                  any(str(v) in rows for v in r.values()))
    if rows is not None and len(chosen) != len(rows):
        raise PaperError(f"--rows {','.join(rows)}: the {table} grid at --scale {scale} has rows "
                         f"{', '.join(_slug(r) for r in grid.rows)}")
    runs = []
    for row in chosen:
        for seed in (grid.seeds if seeds is None else seeds):
            params = {**grid.fixed, **(extra or {}), **row, grid.seed_key: seed}
            runs.append(Run(f"{table.replace('_', '')}-{scale}-{_slug(row)}-s{seed}", params))
    return runs


def _run(cmd: list[str], repo: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=repo, env=tables.dvc_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise PaperError(f"`{' '.join(cmd)}` failed in {repo}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def _dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run([tables.dvc_executable(), *args], repo, check)


def _tracked_changes(repo: Path) -> list[str]:
    out = _run(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout
    return [line[3:] for line in out.splitlines() if line.strip()]


def check_preset(repo: Path, preset: str) -> None:
    """At --scale paper the committed params.yaml must be the preset (but for the machine's own keys)."""
    def flat(path: Path) -> dict:
        return tables.flat_params(yaml.safe_load(path.read_text()) or {})
    mine, want = flat(repo / tables.PARAMS_FILE), flat(repo / "params" / "presets" / f"{preset}.yaml")
    differ = [k for k in sorted(set(mine) | set(want)) if mine.get(k) != want.get(k)
              and k not in MACHINE_KEYS and not k.startswith(MACHINE_PREFIXES)]
    if differ:
        raise PaperError(f"--scale paper runs on the {preset} preset, but params.yaml differs from "
                         f"params/presets/{preset}.yaml in {', '.join(differ)}: cp params/presets/{preset}.yaml "
                         "params.yaml, set data.source and eval.i3d_weights, and commit")


def reproduce_baseline(repo: Path, commit: bool) -> None:
    """`dvc repro` the committed baseline so the queued runs restore its stages from the cache."""
    changed = _tracked_changes(repo)
    if changed:
        raise PaperError("queued experiments start from the last commit, but these tracked files have changes: "
                         f"{', '.join(changed)}; commit them (or stash them) first")
    print("reproducing the baseline (dvc repro), so that every run reuses the stages it does not change",
          flush=True)
    _dvc(repo, "repro")
    changed = _tracked_changes(repo)
    if changed and not commit:
        raise PaperError("dvc repro changed the committed baseline (" + ", ".join(changed) + "): commit the "
                         "reproduced state (git add -u && git commit -m 'reproduced baseline') or pass "
                         "--commit-baseline, then run this command again")
    if changed:
        _run(["git", "add", "-u"], repo)
        has_identity = _run(["git", "config", "user.email"], repo, check=False).stdout.strip()
        identity = [] if has_identity else ["-c", "user.name=pipeline.paper", "-c", "user.email=pipeline.paper@localhost"]
        _run(["git", *identity, "commit", "-qm", "pipeline.paper: the reproduced baseline (dvc repro)"], repo)


def _names_key(stage_param: str, key: str) -> bool:
    """Whether a stage's params entry ("prior", "prior.n_layer") covers the param `key` or part of it."""
    return stage_param in ("", key) or key.startswith(stage_param + ".") or stage_param.startswith(key + ".")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def stages_unaffected_by(dvc_yaml: dict, keys, params_flat: dict | None = None) -> list[str]:
    """The stages of a dvc.yaml (in file order) that neither name one of `keys` in their params nor depend on the
    outs of a stage that does: what every run of a grid sweeping `keys` shares. `${key}` in a path takes its
    value from `params_flat` (params.yaml flattened)."""
    stages = dvc_yaml.get("stages") or {}
    def path(entry) -> str:
        text = next(iter(entry)) if isinstance(entry, dict) else entry
        return re.sub(r"\$\{([^}]+)\}", lambda m: str((params_flat or {}).get(m.group(1), m.group(0))), text)
    def params(stage: dict) -> list[str]:
        names = []
        for entry in stage.get("params") or []:
            if isinstance(entry, str):
                names.append(entry)
            else:   # {file: [keys]}, or {file: None}: every param of the file
                names += [k for ks in entry.values() for k in (ks if ks is not None else [""])]
        return names
    def outs(stage: dict) -> list[str]:
        return [path(o) for kind in ("outs", "metrics", "plots") for o in stage.get(kind) or []]
    affected: set[str] = set()
    for name, stage in stages.items():   # DVC file order is a valid order here: every stage follows its deps
        deps = [path(d) for d in stage.get("deps") or []]
        if (any(_names_key(p, k) for p in params(stage) for k in keys)
                or any(_under(d, o) or _under(o, d) for a in affected for o in outs(stages[a]) for d in deps)):
            affected.add(name)
    return [name for name in stages if name not in affected]


def prime_shared_stages(repo: Path, table: str, grid: Grid, runs: list[Run]) -> None:
    """Run once, with the params every run shares, the stages no swept param reaches, when those params differ
    from the baseline's: the queued runs then restore these stages from the run-cache (not one copy per worker).
    The swept keys are the grid's (its rows' and its seed's), even when a subset of rows or seeds is run."""
    baseline = tables.flat_params(yaml.safe_load((repo / tables.PARAMS_FILE).read_text()) or {})
    swept = {k for row in grid.rows for k in row} | {grid.seed_key}
    shared = {k: v for k, v in runs[0].params.items() if k not in swept}
    if all(baseline.get(k) == v for k, v in shared.items()):
        return    # the reproduced baseline already holds them
    targets = stages_unaffected_by(yaml.safe_load((repo / "dvc.yaml").read_text()), swept, baseline)
    if not targets:
        return
    name = f"{table.replace('_', '')}-shared"
    print(f"running {', '.join(targets)} once with the grid's shared params "
          + ", ".join(f"{k}={_value_text(v)}" for k, v in sorted(shared.items())), flush=True)
    _dvc(repo, "exp", "remove", name, check=False)
    args = [a for k, v in sorted(shared.items()) for a in ("-S", f"{k}={_value_text(v)}")]
    _dvc(repo, "exp", "run", "--temp", "--name", name, *args, *targets)
    _dvc(repo, "exp", "remove", name, check=False)   # its stages stay in the run-cache; the row is not a table row


def experiment_states(repo: Path) -> dict[str, str]:
    """{experiment name: "success" | "queued" | "running" | "failed"} from `dvc exp show --json`."""
    states = {}
    for commit in tables.dvc_exp_show(repo):
        for exp in commit.get("experiments") or []:
            executor = exp.get("executor") or {}
            states[exp.get("name")] = executor.get("state") or "success"
    return states


def queue(repo: Path, runs: list[Run]) -> list[Run]:
    """Queue the runs that have not finished yet (a failed one is removed and queued again)."""
    states = experiment_states(repo)
    queued = []
    for run in runs:
        state = states.get(run.name)
        if state in ("success", "queued", "running"):
            continue
        if state is not None:
            _dvc(repo, "exp", "remove", run.name, check=False)
        args = [a for k, v in run.params.items() for a in ("-S", f"{k}={_value_text(v)}")]
        _dvc(repo, "exp", "run", "--queue", "--name", run.name, *args)
        queued.append(run)
    return queued


def _workers_alive(repo: Path) -> bool:
    """Whether `dvc queue status` reports a worker (active or idle)."""
    out = _dvc(repo, "queue", "status", check=False).stdout
    found = re.search(r"Worker status: (\d+) active, (\d+) idle", out)
    return found is None or int(found.group(1)) + int(found.group(2)) > 0


def wait(repo: Path, runs: list[Run], jobs: int, poll: float = 5.0, patience: int = 6) -> None:
    """Start the queue's workers and return once none of the runs is queued or running; stop with an error when
    the workers are gone while runs are still queued (`patience` polls in a row)."""
    _dvc(repo, "queue", "start", "-j", str(jobs))
    names, last, idle = {r.name for r in runs}, None, 0
    t0 = time.time()
    while True:
        states = experiment_states(repo)
        pending = [n for n in names if states.get(n) in ("queued", "running")]
        done = len(names) - len(pending)
        if (done, len(pending)) != last:
            print(f"{done}/{len(names)} runs finished ({time.time() - t0:.0f} s)", flush=True)
            last = (done, len(pending))
        if not pending:
            return
        idle = 0 if _workers_alive(repo) else idle + 1
        if idle >= patience:
            raise PaperError(f"no queue worker is running but {len(pending)} runs are still queued "
                             f"({', '.join(sorted(pending))}): see `dvc queue status` and `dvc queue logs NAME`")
        time.sleep(poll)


def failure_logs(repo: Path, names: list[str], lines: int = 15) -> dict[str, str]:
    """The tail of `dvc queue logs` of every failed run."""
    out = {}
    for name in names:
        proc = _dvc(repo, "queue", "logs", name, check=False)
        text = (proc.stdout + proc.stderr).strip().splitlines()
        out[name] = "\n".join(text[-lines:]) or "(no log)"
    return out


# ---------------------------------------------------------------- the table


def add_paper_columns(table: tables.Table, name: str) -> tables.Table:
    """The paper's rows beside the grid's, in the paper's order: its row label, then its numbers per column.

    Rows are aligned by position, not by value: at mini scale the swept values differ from the paper's."""
    paper = PAPER.get(name, ())
    metric_headers = table.header[1:1 + table.n_metrics]
    header = table.header + [f"paper: {table.header[0]}"] + [f"paper: {h}" for h in metric_headers]

    def cell(text: str) -> dict:
        return {"text": text, "value": text or None, "note": None}

    rows = [list(r) for r in table.rows]
    rows += [[cell("") for _ in table.header] for _ in range(len(paper) - len(rows))]
    for i, row in enumerate(rows):
        label, numbers = paper[i] if i < len(paper) else ("", {})
        row += [cell(label)] + [cell(numbers.get(h, "–" if label else "")) for h in metric_headers]
    return tables.Table(table.name, table.title, header, rows, table.protocols, table.skipped, table.refused,
                        table.n_metrics)


def build(repo: Path, name: str, runs: list[Run]) -> tuple[tables.Table, dict[str, str]]:
    """The table from exactly this grid's finished runs, and the logs of its failed ones."""
    records, skipped = tables.load_records(tables.dvc_exp_show(repo))
    ours = {r.name for r in runs}
    mine = [r for r in records if r.name in ours]
    failed = [s.split(" (")[0] for s in skipped if s.split(" (")[0] in ours]
    missing = sorted(ours - {r.name for r in mine} - set(failed))
    logs = failure_logs(repo, failed)
    table = tables.build_table(name, mine, [f"{n} (failed)" for n in failed] + [f"{n} (not run)" for n in missing])
    return add_paper_columns(table, name), logs


def render(table: tables.Table, scale: str, grid: Grid, runs: list[Run], logs: dict[str, str],
           wall_s: float | None) -> str:
    md = tables.render_markdown(table)
    n_rows = len({tuple(sorted((k, str(v)) for k, v in r.params.items() if k != grid.seed_key)) for r in runs})
    lines = [md.rstrip("\n"), "",
             f"Scale `{scale}`: {len(runs)} runs ({n_rows} rows x {len(runs) // n_rows} seeds of `{grid.seed_key}`), "
             "every run with "
             + (", ".join(f"`{k}={_value_text(v)}`" for k, v in grid.fixed.items()) or "the baseline's params")
             + (f" ({grid.note})" if grid.note else "") + "."
             + (f" Wall time {wall_s / 60:.0f} min." if wall_s is not None else ""),
             f"Paper columns: {PAPER_SOURCE}, rows in the paper's order beside this grid's."]
    for run_name, log in logs.items():
        lines += ["", f"Failed: {run_name}; the end of `dvc queue logs {run_name}`:", "", "```", log, "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.paper", description=__doc__.split("\n\n")[0])
    ap.add_argument("table", choices=list(GRIDS))
    ap.add_argument("--scale", choices=["mini", "paper"], default="mini")
    ap.add_argument("--seeds", type=int, nargs="+", help="seeds of every row (default: the grid's)")
    ap.add_argument("--rows", help="only these rows, comma-separated (their swept value, e.g. 1,2)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="one more param for every run (e.g. a shorter training for a smoke test)")
    ap.add_argument("--jobs", type=int, default=1, help="queue workers running at once (default 1)")
    ap.add_argument("--no-run", action="store_true", help="only queue the runs (then `dvc queue start`)")
    ap.add_argument("--commit-baseline", action="store_true",
                    help="commit the reproduced baseline when `dvc repro` changed it")
    ap.add_argument("--repo", default=".")
    ap.add_argument("--out-dir", default="reports/tables")
    args = ap.parse_args(argv)
    repo, grid = Path(args.repo), GRIDS[args.table][args.scale]
    extra = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set {item}: expected KEY=VALUE")
        extra[key] = yaml.safe_load(value)
    try:
        runs = plan(args.table, args.scale, grid, rows=args.rows.split(",") if args.rows else None,
                    seeds=tuple(args.seeds) if args.seeds else None, extra=extra)
        if grid.preset:
            check_preset(repo, grid.preset)
        reproduce_baseline(repo, args.commit_baseline)
        states = experiment_states(repo)
        if any(states.get(r.name) != "success" for r in runs):
            prime_shared_stages(repo, args.table, grid, runs)
        queued = queue(repo, runs)
        print(f"{len(queued)} runs queued, {len(runs) - len(queued)} already there", flush=True)
        if args.no_run:
            print("run them with `dvc queue start`, then this command again to write the table")
            return 0
        t0 = time.time()
        wait(repo, runs, args.jobs)
        wall = time.time() - t0 if queued else None
        table, logs = build(repo, args.table, runs)
    except PaperError as err:
        print(f"pipeline.paper: {err}", file=sys.stderr)
        return 2
    md = render(table, args.scale, grid, runs, logs, wall)
    out = Path(args.repo) / args.out_dir
    write_text(out / f"{args.table}_{args.scale}.md", md)
    write_text(out / f"{args.table}_{args.scale}.csv", tables.render_csv(table))
    print(md)
    return 0 if not logs else 1


if __name__ == "__main__":
    sys.exit(main())
