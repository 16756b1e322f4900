"""pipeline.paper: one command per paper table (queue the grid, run it, wait, the table beside the paper's).

The live test drives real `dvc exp run --queue` / `dvc queue start` in the toy repo of test_tables (its stage
computes metrics from the params in a second); the real pipeline's run of the command is in
test_pipeline_e2e (slow)."""
from __future__ import annotations

import json

import pytest
import yaml

from pipeline import paper, tables
from test_tables import FIXTURE, TOY_PARAMS, dvc, make_toy_repo, sh, texts


def test_plan_is_every_row_times_every_seed():
    grid = paper.GRIDS["prior_size"]["mini"]
    runs = paper.plan("prior_size", "mini", grid)
    assert len(runs) == 4 * 2 and len({r.name for r in runs}) == 8
    assert runs[0] == paper.Run("priorsize-mini-nlayer1-s0", {"default_data.n_train": 640, "prior.max_steps": 1200,
                                                              "prior.n_layer": 1, "prior.seed": 0})
    assert runs[-1].params == {"default_data.n_train": 640, "prior.max_steps": 1200, "prior.n_layer": 8,
                              "prior.seed": 1}
    # a subset of rows and seeds, and one more param for every run (a smoke test's shorter training)
    small = paper.plan("prior_size", "mini", grid, rows=["2", "8"], seeds=(5,), extra={"prior.max_steps": 6})
    assert [(r.params["prior.n_layer"], r.params["prior.seed"], r.params["prior.max_steps"]) for r in small] == \
        [(2, 5, 6), (8, 5, 6)]
    with pytest.raises(paper.PaperError, match="has rows nlayer1, nlayer2, nlayer4, nlayer8"):
        paper.plan("prior_size", "mini", grid, rows=["3"])
    attention = paper.plan("attention", "mini", paper.GRIDS["attention"]["mini"])
    assert [r.name for r in attention[:1]] == ["attention-mini-attentiontrue-nreslayers1-s0"]
    assert attention[-1].params == {"vqvae.max_steps": 900, "vqvae.attention": False, "vqvae.n_res_layers": 2,
                                    "vqvae.seed": 2}


def test_stages_a_grid_shares_are_those_no_swept_param_reaches():
    dvc_yaml = yaml.safe_load(open(paper.__file__.replace("pipeline/paper.py", "dvc.yaml")).read())
    params = tables.flat_params(yaml.safe_load(open(paper.__file__.replace("pipeline/paper.py", "params.yaml"))))
    upstream = ["make_default_data", "preprocess", "fvd_real_stats"]
    assert paper.stages_unaffected_by(dvc_yaml, {"prior.n_layer", "prior.seed"}, params) == \
        upstream + ["train_vqvae", "tokenize", "train_classifier"]
    # the classifier has its own seed: a VQ-VAE grid (over the top-level seed too) trains it once
    assert paper.stages_unaffected_by(dvc_yaml, {"vqvae.attention", "seed"}, params) == upstream + ["train_classifier"]
    # preprocess reads ${data.source}, the default data's folder
    assert paper.stages_unaffected_by(dvc_yaml, {"default_data.n_train"}, params) == []
    sampling = paper.stages_unaffected_by(dvc_yaml, {"sample.temperature"}, params)
    assert "train_prior" in sampling and "report" not in sampling    # the report reads every param
    toy = {"stages": {"a": {"params": [{"other.yaml": ["x"]}], "outs": ["out/a"]},
                      "b": {"deps": ["out/a/part"], "outs": [{"out/b.json": {"cache": False}}]},
                      "c": {"deps": ["out"], "params": ["y.z"]}, "d": {"params": ["y"]}}}
    assert paper.stages_unaffected_by(toy, {"x"}) == ["d"]        # b reads inside a's out, c a folder holding it
    assert paper.stages_unaffected_by(toy, {"y.z.w"}) == ["a", "b"]


def test_every_grid_plans_and_its_paper_rows_name_its_columns():
    for name, scales in paper.GRIDS.items():
        headers = {c.header for c in tables.TABLES[name].columns}
        for scale, grid in scales.items():
            runs = paper.plan(name, scale, grid)
            assert len(runs) == len(grid.rows) * len(grid.seeds)
            for run in runs:  # every param a run sets is one `dvc exp run -S` understands: a key of params.yaml
                for key in run.params:
                    section, _, leaf = key.rpartition(".")
                    defaults = yaml.safe_load(open("params.yaml"))
                    assert leaf in (defaults[section] if section else defaults), key
        for _, numbers in paper.PAPER[name]:
            assert set(numbers) <= headers, name


def test_paper_columns_beside_the_table():
    records, skipped = tables.load_records(json.loads(FIXTURE.read_text()))
    table = paper.add_paper_columns(tables.build_table("prior_size", records, skipped), "prior_size")
    rows = texts(table)
    assert table.header[-5:] == ["paper: Transformer Layers", "paper: bits/dim (↓)", "paper: FVD (↓)",
                                 "paper: classifier IS (↑)", "paper: classifier FD (↓)"]
    # the paper has no classifier score of this project: a dash
    assert rows[0][0] == "2" and rows[0][-5:] == ["2", "2.84", "120.4 ± 6.0", "–", "–"]
    assert rows[3][:1] == [""] and rows[3][-5:] == ["16", "2.05", "103.6 ± 2.0", "–", "–"]   # the paper's 4th row
    csv_head = tables.render_csv(table).splitlines()[0]
    assert csv_head.endswith("Runs,Experiments,paper: Transformer Layers,paper: bits/dim (↓),paper: FVD (↓),"
                             "paper: classifier IS (↑),paper: classifier FD (↓),notes")


def test_paper_scale_needs_the_committed_preset(tmp_path):
    (tmp_path / "params" / "presets").mkdir(parents=True)
    preset = yaml.safe_load(open("params/presets/bair.yaml"))
    (tmp_path / "params" / "presets" / "bair.yaml").write_text(yaml.safe_dump(preset))
    mine = json.loads(json.dumps(preset))
    mine["data"]["source"], mine["trainer"]["devices"] = "/data/bair", 8   # the machine's own keys may differ
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(mine))
    paper.check_preset(tmp_path, "bair")
    mine["prior"]["n_head"] += 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(mine))
    with pytest.raises(paper.PaperError, match=r"differs from params/presets/bair.yaml in prior.n_head"):
        paper.check_preset(tmp_path, "bair")


@pytest.mark.slow
def test_live_grid_queued_run_and_tabled(tmp_path, capsys):
    """Real DVC queue on the toy repo: an uncommitted change is refused; then two rows x two seeds are queued,
    run by a queue worker, waited for, and tabled with the paper's numbers; a second call reuses the runs."""
    repo = make_toy_repo(tmp_path / "toy")
    (repo / "params.yaml").write_text(TOY_PARAMS.replace("n_layer: 4", "n_layer: 5"))
    argv = ["prior_size", "--repo", str(repo), "--rows", "2,8", "--seeds", "0", "1", "--out-dir", "tables"]
    assert paper.main(argv) == 2
    assert "tracked files have changes: params.yaml" in capsys.readouterr().err
    sh(repo, "git", "checkout", "--", "params.yaml")

    assert paper.main(argv) == 0
    md = (repo / "tables" / "prior_size_mini.md").read_text()
    rows = texts_of(md)
    # toy: bits/dim 3 - 0.1 n + 0.02 prior.seed -> seeds 0, 1: mean +0.01, sample std 0.014
    # columns: layers, bits/dim, FVD, classifier IS, classifier FD (the toy writes none: n/a), runs, experiments
    assert [rows[0][i] for i in (0, 1, 2, 5)] == ["2", "2.810 ± 0.014", "141.0 ± 1.4", "2"]
    assert [rows[1][i] for i in (0, 1, 2, 5)] == ["8", "2.210 ± 0.014", "111.0 ± 1.4", "2"]
    assert rows[0][3].startswith("n/a") and "metrics/eval.json: no classifier.is" in md
    assert rows[0][-5:] == ["2", "2.84", "120.4 ± 6.0", "–", "–"]
    assert "Scale `mini`: 4 runs (2 rows x 2 seeds of `prior.seed`)" in md and "`prior.max_steps=1200`" in md
    assert (repo / "tables" / "prior_size_mini.csv").is_file()
    out = capsys.readouterr().out
    assert "4 runs queued, 0 already there" in out and "4/4 runs finished" in out

    # again: nothing is queued twice, the same rows
    assert paper.main(argv) == 0
    assert "0 runs queued, 4 already there" in capsys.readouterr().out
    assert texts_of((repo / "tables" / "prior_size_mini.md").read_text()) == rows


def texts_of(md: str) -> list[list[str]]:
    lines = [line for line in md.splitlines() if line.startswith("| ")][1:]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]


@pytest.mark.slow
def test_live_failed_row_is_named_with_its_log(tmp_path, capsys):
    repo = make_toy_repo(tmp_path / "toy")   # the toy stage cannot divide a string: the run fails
    argv = ["prior_size", "--repo", str(repo), "--rows", "2", "--seeds", "0", "--set", "vqvae.n_codes=many",
            "--out-dir", "tables"]
    assert paper.main(argv) == 1
    md = (repo / "tables" / "prior_size_mini.md").read_text()
    assert "Failed: priorsize-mini-nlayer2-s0" in md and "TypeError" in md
    assert dvc(repo, "exp", "show", "--csv")  # the repository is left usable
