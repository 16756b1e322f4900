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
    att = p["vqvae"]["attention"]
    vq_seed, seed = (p["seed"] if p[s]["seed"] is None else p[s]["seed"] for s in ("vqvae", "prior"))
    if n == 3:
        sys.exit("n_layer 3 is broken on purpose")
    os.makedirs("metrics", exist_ok=True)
    nmse = 0.0033 + 0.0002 * vq_seed if att else 0.0041 - 0.0001 * p["vqvae"]["n_res_layers"]
    json.dump({"nmse": nmse, "protocol": {"split": "test", "n": 40}}, open("metrics/vqvae.json", "w"))
    bpd = round(3.0 - 0.1 * n + 0.5 * (codes // 256) + 0.02 * seed, 3)
    json.dump({"val_bits_per_dim": bpd, "protocol": {"split": "test", "n": 40}}, open("metrics/prior.json", "w"))
    proto = {"split": "test", "n_real": 40, "frames": p["data"]["sequence_length"],
             "resolution": p["data"]["resolution"], "n_generated": 16, "weights": p["eval"]["i3d_weights"]}
    have = p["eval"]["i3d_weights"] is not None
    k = p["eval"].get("n_trials", 1)
    def entry(v):  # trials v-1, v, v+1 (k=3): mean v, population std sqrt(2/3)
        trials = [v + d for d in ((-1, 0, 1) if k == 3 else (0,) * k)] if have else [None] * k
        std = (sum((t - v) ** 2 for t in trials) / k) ** 0.5 if have else None
        return {"mean": v if have else None, "std": std, "trials": trials, "n_trials": k,
                "reason": None if have else "no I3D weights: eval.i3d_weights is null", "what": "FD",
                "protocol": proto}
    json.dump({"fvd": entry(100.0 + 80.0 / n + 2 * seed), "r_fvd": entry(10.0 + ds[0] + (0 if att else 5)),
               "fvd_star": entry(90.0 + n)}, open("metrics/eval.json", "w"))
""")
TOY_PARAMS = textwrap.dedent("""
    seed: 0
    default_data:
      n_train: 160
    data:
      resolution: 32
      sequence_length: 8
    vqvae:
      downsample: [2, 4, 4]
      n_codes: 128
      attention: true
      n_res_layers: 1
      max_steps: 450
      seed: null
    prior:
      n_layer: 4
      max_steps: 600
      seed: null
    eval:
      i3d_weights: i3d.pt
      n_trials: 1
""")
TOY_DVC_YAML = textwrap.dedent(f"""
    stages:
      toy:
        cmd: {sys.executable} toy.py
        deps: [toy.py]
        params: [seed, default_data, data, vqvae, prior, eval]
        metrics:
          - metrics/vqvae.json:
              cache: false
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
    for overrides in (["seed=1"], ["prior.n_layer=2"], ["prior.n_layer=2", "seed=1"], ["prior.n_layer=8"],
                      ["prior.n_layer=8", "seed=1"], ["prior.n_layer=8", "vqvae.n_codes=256"],
                      ["vqvae.attention=false", "vqvae.n_res_layers=2"], ["vqvae.downsample=[1,2,2]"],
                      ["prior.n_layer=2", "eval.i3d_weights=null"]):
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


def by_name(records):
    return {r.name: r for r in records}


def exp_named(payload, **params):
    """The name of the fixture's finished experiment with exactly these param overrides over the baseline."""
    base = tables.flat_params(payload[1]["data"]["params"]["params.yaml"]["data"])
    for exp in payload[1]["experiments"]:
        state = exp["revs"][0]
        if exp.get("executor") or not state.get("data"):
            continue
        flat = tables.flat_params(state["data"]["params"]["params.yaml"]["data"])
        if {k: v for k, v in flat.items() if base.get(k) != v} == params:
            return exp["name"]
    raise KeyError(params)


def test_records_from_captured_payload(payload):
    records, skipped = tables.load_records(payload)
    names = by_name(records)
    # the workspace equals the last experiment and is not a row of its own; baseline + 9 finished experiments are
    assert "workspace" not in names and len(records) == 10
    assert [r.kind for r in records].count("baseline") == 1 and names["master"].kind == "baseline"
    assert all(tables.EVAL in r.metrics and tables.PRIOR in r.metrics and tables.VQVAE in r.metrics and not r.errors
               for r in records)
    assert len(skipped) == 2
    assert any(s.endswith("(queued)") for s in skipped)
    assert any("(failed, exit" in s for s in skipped)


def test_prior_size_table_means_over_seeds(payload):
    table = tables.build_table("prior_size", *tables.load_records(payload))
    rows = texts(table)
    assert table.header == ["Transformer Layers", "bits/dim (↓)", "FVD (↓)", "classifier IS (↑)", "classifier FD (↓)",
                            "Runs", "Experiments"]
    # one row per n_layer, each the mean over seeds 0 and 1 (toy: bits/dim 3 - 0.1 n + 0.02 seed, FVD 100 + 80/n
    # + 2 seed): sample std of {x, x + 0.02} = 0.02 / sqrt(2) = 0.014, of {y, y + 2} = 1.4
    # the toy runs have no classifier score: n/a in its columns
    assert rows == [["2", "2.810 ± 0.014", "141.0 ± 1.4", "n/a [^1]", "n/a [^2]", "2", f"{exp_named(payload, **{'prior.n_layer': 2})}, "
                     f"{exp_named(payload, **{'prior.n_layer': 2, 'seed': 1})}"],
                    ["4", "2.610 ± 0.014", "121.0 ± 1.4", "n/a [^1]", "n/a [^2]", "2", f"master (baseline), {exp_named(payload, seed=1)}"],
                    ["8", "2.210 ± 0.014", "111.0 ± 1.4", "n/a [^1]", "n/a [^2]", "2", f"{exp_named(payload, **{'prior.n_layer': 8})}, "
                     f"{exp_named(payload, **{'prior.n_layer': 8, 'seed': 1})}"]]
    md = tables.render_markdown(table)
    assert "- protocol of FVD (↓): n_real=40, n_generated=16, frames=8, resolution=32, split=test" in md
    assert "Not shown:" in md and "(queued)" in md and "(failed, exit" in md


def test_runs_differing_in_other_params_are_refused_by_name(payload):
    """A run that differs from the baseline in any param but the swept one and the seeds never joins a table."""
    records, skipped = tables.load_records(payload)
    table = tables.build_table("prior_size", records, skipped)
    refused = " ".join(table.refused)
    codes256 = exp_named(payload, **{"prior.n_layer": 8, "vqvae.n_codes": 256})
    no_weights = exp_named(payload, **{"prior.n_layer": 2, "eval.i3d_weights": None})
    assert f"{codes256} (differs from master in vqvae.n_codes: 256 vs 128)" in table.refused
    assert f'{no_weights} (differs from master in eval.i3d_weights: null vs "i3d.pt")' in table.refused
    assert codes256 not in " ".join(r[-1]["text"] for r in table.rows)
    md = tables.render_markdown(table)
    assert "Not comparable, left out:" in md and "vqvae.n_codes: 256 vs 128" in md
    # the same experiment is a row where its param is the swept one
    codes = texts(tables.build_table("codebook_size", records, skipped))
    assert [r[0] for r in codes] == ["128"]      # n_codes 256 was trained with 8 layers: not comparable here
    assert "prior.n_layer" not in refused        # prior.n_layer is the swept param of this table


def test_other_tables(payload):
    records, skipped = tables.load_records(payload)
    latent = texts(tables.build_table("latent_size", records, skipped))
    # 8 frames, 32x32 pixels: downsample [2,4,4] -> 4x8x8 (256 latents), [1,2,2] -> 8x16x16 (2048)
    assert [r[0] for r in latent] == ["4 × 8 × 8", "8 × 16 × 16"]
    assert latent[1][1:4] == ["11.0", "120.0", "94.0"] and latent[1][6] == "1"       # one run: no ± figure
    attention = texts(tables.build_table("attention", records, skipped))
    # the variant without attention has an extra residual block (both swept), as the paper matched parameters
    assert [r[0] for r in attention] == ["No Attention", "With Attention"]
    assert attention[0][1:4] == ["0.0039", "17.0", "1"]
    assert attention[1][1:4] == ["0.0034 ± 0.0001", "12.0 ± 0.0", "2"]   # NMSE from metrics/vqvae.json


def test_numbers_under_another_protocol_are_never_averaged(payload):
    payload = copy.deepcopy(payload)
    seed1 = exp_named(payload, **{"prior.n_layer": 8, "seed": 1})
    exp = next(e for e in payload[1]["experiments"] if e["name"] == seed1)
    exp["revs"][0]["data"]["metrics"][tables.EVAL]["data"]["fvd"]["protocol"]["n_real"] = 8
    table = tables.build_table("prior_size", *tables.load_records(payload))
    row8 = next(r for r in table.rows if r[0]["text"] == "8")
    fvd = row8[2]
    assert fvd["value"] == 110.0 and fvd["std"] is None and fvd["n"] == 1      # seed 0 alone, not (110 + 112) / 2
    assert "1 of 2 runs" in fvd["note"] and "n_real: 8 vs 40" in fvd["note"] and seed1 in fvd["note"]
    assert row8[1]["text"] == "2.210 ± 0.014"                                   # bits/dim's protocol is unchanged


def test_missing_files_and_skipped_states(payload):
    payload = copy.deepcopy(payload)
    exps = payload[1]["experiments"]
    seed1 = exp_named(payload, seed=1)
    first = next(e for e in exps if e["name"] == seed1)["revs"][0]["data"]
    first["metrics"][tables.EVAL] = {"error": {"type": "FileNotFoundError", "msg": "[Errno 2] no eval.json"}}
    done = next(e for e in exps if not e.get("executor"))
    exps.append({"name": "ghost", "executor": None, "revs": [{"rev": "0" * 40, "name": "ghost", "data": None,
                                                              "error": None, "experiments": None}]})
    exps.append({"name": "busy", "executor": {"state": "running", "local": {"returncode": None}},
                 "revs": [copy.deepcopy(done["revs"][0])]})
    broken_exp = copy.deepcopy(done)
    broken_exp["name"], broken_exp["revs"][0]["error"] = "oops", {"msg": "Experiment run failed", "type": ""}
    exps.append(broken_exp)
    records, skipped = tables.load_records(payload)
    assert "ghost (no data)" in skipped and "busy (running)" in skipped
    assert "oops (failed: Experiment run failed)" in skipped and "oops" not in {r.name for r in records}
    table = tables.build_table("prior_size", records, skipped)
    row4 = next(r for r in texts(table) if r[0] == "4")
    assert row4[1] == "2.610 ± 0.014"                  # prior.json of both runs is fine
    assert row4[2].startswith("120.0 [^")               # FVD of the baseline only, footnoted
    assert "1 of 2 runs: metrics/eval.json unreadable: FileNotFoundError [Errno 2] no eval.json" in \
        tables.render_markdown(table)


def test_csv_and_files(payload, tmp_path):
    table = tables.build_table("prior_size", *tables.load_records(payload))
    md = tables.write_table(table, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["prior_size.csv", "prior_size.md"]
    assert (tmp_path / "out" / "prior_size.md").read_text() == md
    lines = (tmp_path / "out" / "prior_size.csv").read_text().splitlines()
    assert lines[0] == ("Transformer Layers,bits/dim (↓),bits/dim (↓) seed std,FVD (↓),FVD (↓) seed std,"
                        "classifier IS (↑),classifier IS (↑) seed std,classifier FD (↓),classifier FD (↓) seed std,"
                        "Runs,Experiments,notes")
    key, bpd, bpd_std, fvd, fvd_std, _, _, _, _, n = lines[2].split(",")[:10]
    assert key == "4" and float(bpd) == pytest.approx(2.61) and float(bpd_std) == pytest.approx(0.02 / 2 ** 0.5)
    assert float(fvd) == 121.0 and float(fvd_std) == pytest.approx(2 ** 0.5) and n == "2"


def test_cli_reads_saved_json(tmp_path, capsys):
    assert tables.main(["all", "--json", str(FIXTURE), "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in tables.TABLES:
        assert (tmp_path / f"{name}.md").read_text() in out
        assert (tmp_path / f"{name}.csv").is_file()


def test_live_dvc_experiments(tmp_path):
    """Real `dvc exp run`s, then the prior_size table from the live `dvc exp show --json`: seeds averaged, FVD
    trials' spread shown apart, a run with other params left out."""
    repo = make_toy_repo(tmp_path / "toy")
    (repo / "params.yaml").write_text(TOY_PARAMS.replace("n_trials: 1", "n_trials: 3"))  # a 3-trial baseline
    dvc(repo, "repro", "-q")
    sh(repo, "git", "commit", "-qam", "three FVD trials")
    exp_run(repo, "prior.n_layer=8")
    exp_run(repo, "prior.n_layer=8", "seed=1")
    exp_run(repo, "prior.n_layer=16", "vqvae.n_codes=256")
    exp_run(repo, "prior.n_layer=16", "eval.n_trials=1")
    records, skipped = tables.load_records(tables.dvc_exp_show(repo))
    assert skipped == [] and len(records) == 5       # workspace == the last experiment: no extra row
    table = tables.build_table("prior_size", records, skipped)
    rows = texts(table)
    assert [r[0] for r in rows] == ["4", "8"]
    # trials v-1, v, v+1: population std sqrt(2/3) = 0.8, shown apart from the seeds' spread
    assert rows[0][1:3] + rows[0][5:6] == ["2.600", "120.0 (trials ± 0.8)", "1"]
    assert rows[1][1:3] + rows[1][5:6] == ["2.210 ± 0.014", "111.0 ± 1.4 (trials ± 0.8)", "2"]  # seeds: FVD 110, 112
    assert sorted(r.split(" (")[1] for r in table.refused) == ["differs from master in eval.n_trials: 1 vs 3)",
                                                               "differs from master in vqvae.n_codes: 256 vs 128)"]


if __name__ == "__main__":
    if sys.argv[1:] != ["--regen"]:
        sys.exit("usage: python tests/test_tables.py --regen   (rewrites tests/data/exp_show.json)")
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        regenerate_fixture(Path(d))
    print(f"wrote {FIXTURE}")
