"""pipeline.tables: paper-shaped tables from `dvc exp show --json`.

tests/data/exp_show.json is real DVC 3.67 output from the toy repo built by `make_toy_repo` below
(regenerate with `python tests/test_tables.py --regen`), captured when eval.json entries still had one
"value" instead of a trials summary, so it also checks that older experiments still read. Its entries: the workspace (equal to the
baseline, as the generator resets params.yaml before queueing), the baseline `master` (n_layer 4, no
I3D weights, so null FVDs), four finished experiments (n_layer 2 and 8 with FVDs; a second n_layer 8
with 256 codes; downsample [1,2,2] without attention), one failed queued experiment (n_layer 3,
which DVC still reports with stale metrics) and one still queued (n_layer 16).
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline import tables

FIXTURE = Path(__file__).parent / "data" / "exp_show.json"
REASON = "no I3D weights: eval.i3d_weights is null"

# The toy stage: metrics/prior.json and metrics/eval.json shaped like the real ones, computed from params.
TOY_SCRIPT = textwrap.dedent("""
    import json, os, sys, yaml
    p = yaml.safe_load(open("params.yaml"))
    n, codes, ds = p["prior"]["n_layer"], p["vqvae"]["n_codes"], p["vqvae"]["downsample"]
    if n == 3:
        sys.exit("n_layer 3 is broken on purpose")
    os.makedirs("metrics", exist_ok=True)
    bpd = round(3.0 - 0.1 * n + 0.5 * (codes // 256), 3)
    json.dump({"val_bits_per_dim": bpd, "train_unigram_entropy_bits": 6.5}, open("metrics/prior.json", "w"))
    proto = {"split": "test", "n_real": 40, "frames": p["data"]["sequence_length"],
             "resolution": p["data"]["resolution"], "n_generated": 16}
    have = p["eval"]["i3d_weights"] is not None
    k = p["eval"].get("n_trials", 1)
    def entry(v):  # trials v-1, v, v+1 (k=3): mean v, population std sqrt(2/3)
        trials = [v + d for d in ((-1, 0, 1) if k == 3 else (0,) * k)] if have else [None] * k
        std = (sum((t - v) ** 2 for t in trials) / k) ** 0.5 if have else None
        return {"mean": v if have else None, "std": std, "trials": trials, "n_trials": k,
                "reason": None if have else "no I3D weights: eval.i3d_weights is null", "what": "FD",
                "protocol": proto}
    json.dump({"fvd": entry(100.0 + 80.0 / n), "r_fvd": entry(10.0 + ds[0] + (0 if p["vqvae"]["attention"] else 5)),
               "fvd_star": entry(90.0 + n),
               "recon": {"nmse": 0.0033 if p["vqvae"]["attention"] else 0.0041, "psnr": 25.0, "codes_used": 0.9},
               "test_bits_per_dim": {"value": round(bpd + 0.1, 3), "protocol": {"split": "test"}}},
              open("metrics/eval.json", "w"))
""")
TOY_PARAMS = textwrap.dedent("""
    seed: 0
    data:
      resolution: 32
      sequence_length: 8
    vqvae:
      downsample: [2, 4, 4]
      n_codes: 128
      attention: true
    prior:
      n_layer: 4
    eval:
      i3d_weights: null
      n_trials: 1
""")
TOY_DVC_YAML = textwrap.dedent(f"""
    stages:
      toy:
        cmd: {sys.executable} toy.py
        deps: [toy.py]
        params: [data, vqvae, prior, eval]
        metrics:
          - metrics/prior.json:
              cache: false
          - metrics/eval.json:
              cache: false
""")
# the queue worker runs `dvc` from PATH: put this environment's first
ENV = {**os.environ, "PATH": os.pathsep.join([str(Path(tables.dvc_executable()).parent), os.environ.get("PATH", "")]),
       "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
       "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def sh(repo: Path, *cmd: str) -> str:
    proc = subprocess.run(cmd, cwd=repo, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def dvc(repo: Path, *args: str) -> str:
    return sh(repo, tables.dvc_executable(), *args)


def make_toy_repo(repo: Path) -> Path:
    """A git+dvc repo with one stage writing the two metrics files; baseline reproduced and committed."""
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "toy.py").write_text(TOY_SCRIPT)
    (repo / "params.yaml").write_text(TOY_PARAMS)
    (repo / "dvc.yaml").write_text(TOY_DVC_YAML)
    sh(repo, "git", "init", "-q", "-b", "master")
    dvc(repo, "init", "-q")
    dvc(repo, "repro", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "baseline")
    return repo


def exp_run(repo: Path, *overrides: str, queue: bool = False) -> None:
    """`dvc exp run -S ...` from the baseline: -S edits the workspace params, so reset them first."""
    sh(repo, "git", "checkout", "-q", "--", ".")
    dvc(repo, "exp", "run", "-q", *(["--queue"] if queue else []), *[a for o in overrides for a in ("-S", o)])


def regenerate_fixture(workdir: Path) -> None:
    repo = make_toy_repo(workdir / "toy")
    for overrides in (["prior.n_layer=2", "eval.i3d_weights=i3d.pt"], ["prior.n_layer=8", "eval.i3d_weights=i3d.pt"],
                      ["prior.n_layer=8", "vqvae.n_codes=256", "eval.i3d_weights=i3d.pt"],
                      ["vqvae.downsample=[1,2,2]", "vqvae.attention=false"]):
        exp_run(repo, *overrides)
    exp_run(repo, "prior.n_layer=3", queue=True)
    dvc(repo, "queue", "start", "-j", "1")
    for _ in range(120):                       # until the worker has failed it and stopped
        time.sleep(1)
        status = dvc(repo, "queue", "status")
        if "Failed" in status and "0 active, 0 idle" in status:
            break
    exp_run(repo, "prior.n_layer=16", queue=True)
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(json.loads(dvc(repo, "exp", "show", "--json")), indent=1) + "\n")


@pytest.fixture
def payload():
    return json.loads(FIXTURE.read_text())


def texts(table):
    """The body cells of the rendered markdown table, footnote marks included."""
    lines = [line for line in tables.render_markdown(table).splitlines() if line.startswith("| ")]
    assert lines[0] == "| " + " | ".join(table.header) + " |"
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[1:]]


def test_records_from_captured_payload(payload):
    records, skipped = tables.load_records(payload)
    names = {r.name: r for r in records}
    # the workspace equals the baseline and is not a row of its own; baseline + 4 finished experiments are
    assert "workspace" not in names and len(records) == 5
    assert [r.kind for r in records].count("baseline") == 1 and names["master"].kind == "baseline"
    assert sorted(r.params["prior"]["n_layer"] for r in records) == [2, 4, 4, 8, 8]
    assert all(tables.EVAL in r.metrics and tables.PRIOR in r.metrics and not r.errors for r in records)
    assert len(skipped) == 2
    assert any(s.endswith("(queued)") for s in skipped)
    assert any("(failed, exit" in s for s in skipped)


def test_prior_size_table(payload):
    table = tables.build_table("prior_size", *tables.load_records(payload))
    rows = texts(table)
    assert table.header == ["Transformer Layers", "val bits/dim", "test bits/dim", "FVD (↓)", "Experiment"]
    # sorted by n_layer; the two n_layer 8 runs and the two n_layer 4 runs are both listed, baseline first
    assert [r[0] for r in rows] == ["2", "4", "4", "8", "8"]
    assert rows[1][4] == "master (baseline)"
    by_name = {r[4]: r for r in rows}
    assert by_name["master (baseline)"][1:4] == ["2.600", "2.700", "n/a [^1]"]
    n2 = next(r for r in rows if r[0] == "2")
    assert n2[1:4] == ["2.800", "2.900", "140.0"]
    n8 = sorted(r[1:4] for r in rows if r[0] == "8")
    assert n8 == [["2.200", "2.300", "110.0"], ["2.700", "2.800", "110.0"]]

    md = tables.render_markdown(table)
    assert f"[^1]: {REASON}" in md
    assert "FVD protocols differ" not in md      # the FVD entries of the null rows carry the same protocol
    assert "FVD protocol: n_real=40, n_generated=16, frames=8, resolution=32" in md
    assert "| 2 | 2.800 | 2.900 | 140.0 |" in md
    assert "Not shown:" in md and "(queued)" in md and "(failed, exit" in md


def test_other_tables(payload):
    records, skipped = tables.load_records(payload)
    codes = texts(tables.build_table("codebook_size", records, skipped))
    assert [r[0] for r in codes] == ["128"] * 4 + ["256"]
    assert codes[-1][1:5] == ["12.0", "110.0", "2.700", "2.800"]

    latent = texts(tables.build_table("latent_size", records, skipped))
    # 8 frames, 32x32 pixels: downsample [2,4,4] -> 4x8x8 (256 latents), [1,2,2] -> 8x16x16 (2048)
    assert [r[0] for r in latent] == ["4 × 8 × 8"] * 4 + ["8 × 16 × 16"]
    assert latent[-1][1:4] == ["n/a [^1]"] * 3
    assert ["12.0", "140.0", "92.0"] in [r[1:4] for r in latent]

    attention = texts(tables.build_table("attention", records, skipped))
    assert [r[0] for r in attention] == ["No Attention"] + ["With Attention"] * 4
    assert attention[0][1:3] == ["0.0041", "n/a [^1]"]
    assert {r[1] for r in attention[1:]} == {"0.0033"}


def test_missing_files_errors_and_protocols(payload):
    payload = copy.deepcopy(payload)
    exps = payload[1]["experiments"]
    first = exps[0]["revs"][0]["data"]
    # a missing metrics file (as DVC reports it) and a second FVD protocol
    first["metrics"][tables.EVAL] = {"error": {"type": "FileNotFoundError", "msg": "[Errno 2] no eval.json"}}
    second = exps[1]["revs"][0]["data"]["metrics"][tables.EVAL]["data"]
    second["fvd"]["protocol"]["n_real"] = 8
    # an experiment whose state has no data at all, and one whose running executor is reported
    exps.append({"name": "ghost", "executor": None, "revs": [{"rev": "0" * 40, "name": "ghost", "data": None,
                                                              "error": None, "experiments": None}]})
    exps.append({"name": "busy", "executor": {"state": "running", "local": {"returncode": None}},
                 "revs": [copy.deepcopy(exps[2]["revs"][0])]})
    broken_exp = copy.deepcopy(exps[2])
    broken_exp["name"], broken_exp["revs"][0]["error"] = "oops", {"msg": "Experiment run failed", "type": ""}
    exps.append(broken_exp)
    records, skipped = tables.load_records(payload)
    assert "ghost (no data)" in skipped and "busy (running)" in skipped
    assert "oops (failed: Experiment run failed)" in skipped and "oops" not in {r.name for r in records}
    table = tables.build_table("prior_size", records, skipped)
    md = tables.render_markdown(table)
    broken = next(r for r in texts(table) if r[4] == exps[0]["name"])
    assert broken[2:4] == ["- [^2]", "- [^2]"] and broken[1] != "-"
    assert "[^2]: metrics/eval.json unreadable: FileNotFoundError [Errno 2] no eval.json" in md
    assert "FVD protocols differ" in md and "n_real=8" in md and "n_real=40" in md


def test_csv_and_files(payload, tmp_path):
    table = tables.build_table("prior_size", *tables.load_records(payload))
    md = tables.write_table(table, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["prior_size.csv", "prior_size.md"]
    assert (tmp_path / "out" / "prior_size.md").read_text() == md
    lines = (tmp_path / "out" / "prior_size.csv").read_text().splitlines()
    assert lines[0] == "Transformer Layers,val bits/dim,test bits/dim,FVD (↓),Experiment,notes"
    assert lines[1].startswith("2,2.8,2.9,140.0,")
    assert lines[2] == f"4,2.6,2.7,,master (baseline),{REASON}"


def test_cli_reads_saved_json(tmp_path, capsys):
    assert tables.main(["all", "--json", str(FIXTURE), "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in tables.TABLES:
        assert (tmp_path / f"{name}.md").read_text() in out
        assert (tmp_path / f"{name}.csv").is_file()


def test_live_dvc_experiments(tmp_path):
    """Real `dvc exp run` twice, then the prior_size table from the live `dvc exp show --json`."""
    repo = make_toy_repo(tmp_path / "toy")
    exp_run(repo, "prior.n_layer=8", "eval.i3d_weights=i3d.pt")
    exp_run(repo, "prior.n_layer=16", "eval.i3d_weights=i3d.pt", "eval.n_trials=3")
    exp_run(repo, "prior.n_layer=2")
    records, skipped = tables.load_records(tables.dvc_exp_show(repo))
    assert skipped == [] and len(records) == 4       # workspace == the last experiment: no extra row
    table = tables.build_table("prior_size", records, skipped)
    rows = texts(table)
    assert [r[0] for r in rows] == ["2", "4", "8", "16"]
    assert rows[0][1:4] == ["2.800", "2.900", "n/a [^1]"]
    assert rows[1][1:5] == ["2.600", "2.700", "n/a [^1]", "master (baseline)"]
    assert rows[2][1:4] == ["2.200", "2.300", "110.0"]  # one trial: no ± figure
    assert rows[3][1:4] == ["1.400", "1.500", "105.0 ± 0.8"]  # three trials 104, 105, 106: std sqrt(2/3)
    assert f"[^1]: {REASON}" in tables.render_markdown(table)
    csv_rows = tables.render_csv(table).splitlines()
    assert csv_rows[0].startswith("Transformer Layers,val bits/dim,test bits/dim,FVD (↓),FVD (↓) std,")
    assert csv_rows[4].startswith("16,1.4,1.5,105.0,0.816496580927726")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regen"]:
        sys.exit("usage: python tests/test_tables.py --regen   (rewrites tests/data/exp_show.json)")
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        regenerate_fixture(Path(d))
    print(f"wrote {FIXTURE}")
