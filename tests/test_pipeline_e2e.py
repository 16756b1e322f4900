"""The real DVC pipeline, end to end, on tiny params in a temporary copy of the repository."""
import json
import re
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

import browser  # tests/browser.py
from dvc_repo import TINY, commit, run
from pipeline import publish
from videogpt import VideoGPT
from videogpt.config import load


@pytest.fixture(scope="module")
def repo(tmp_path_factory, repo_copy):
    """A git + DVC copy of the working tree with tiny params."""
    dst = tmp_path_factory.mktemp("repo")
    return dst, repo_copy(dst, TINY)


@pytest.fixture(scope="module")
def reproduced(repo):
    dst, env = repo
    out = run([sys.executable, "-m", "dvc", "repro"], dst, env, timeout=900)
    return dst, env, out


def test_repro_writes_every_declared_out(reproduced):
    dst, env, _ = reproduced
    dvc = yaml.safe_load((dst / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        for kind in ("outs", "metrics"):
            for out in stage.get(kind, []):
                path = next(iter(out)) if isinstance(out, dict) else out
                assert (dst / path).exists(), f"{name}: {path} missing"
    clips = zarr.open_group(str(dst / "data/clips.zarr"), mode="r")
    assert clips["train"]["clips"].shape[1:] == (4, 16, 16, 3)
    tokens = zarr.open_group(str(dst / "data/tokens.zarr"), mode="r")
    assert tokens["train"]["tokens"].shape[1:] == (2, 4, 4)
    assert tokens["train"]["tokens"].dtype == np.uint8
    samples = zarr.open_group(str(dst / "samples/samples.zarr"), mode="r")
    assert samples["videos"].shape == (4, 4, 16, 16, 3)  # eval.n_real x eval.n_trials: the FVD set
    assert len(list((dst / "samples/mp4").glob("*.mp4"))) == 2  # sample.n_samples: the viewable ones
    assert (dst / "samples/grid.gif").stat().st_size > 0 and (dst / "samples/grid.png").stat().st_size > 0
    vq = json.loads((dst / "metrics/vqvae.json").read_text())
    assert vq["steps"] == 6 and 0 < vq["codes_used"] <= 1
    prior = json.loads((dst / "metrics/prior.json").read_text())
    assert prior["val_bits_per_dim"] > 0
    # each model's own metrics file carries its size (a table about one model needs only that stage)
    models = VideoGPT.from_pretrained(dst / "models")
    assert vq["n_params"] == sum(p.numel() for p in models.vqvae.parameters() if p.requires_grad)
    assert prior["n_params"] == models.prior.num_params()
    for curve in ("vqvae/plots/metrics/train/recon_loss.tsv", "prior/plots/metrics/train/bits_per_dim.tsv"):
        assert len((dst / "dvclive" / curve).read_text().splitlines()) > 1, curve  # dvc plots has data
    ev = json.loads((dst / "metrics/eval.json").read_text())
    assert ev["fvd"]["mean"] is None and ev["fvd"]["reason"].startswith("no I3D weights")


def declared_outs(dst: Path):
    """Every path the stages declare as outs or metrics in dvc.yaml."""
    dvc = yaml.safe_load((dst / "dvc.yaml").read_text())
    for stage in dvc["stages"].values():
        for out in stage.get("outs", []) + stage.get("metrics", []):
            yield dst / (next(iter(out)) if isinstance(out, dict) else out)


def test_stage_outputs_are_readable_by_group_and_others(reproduced):
    """Under umask 022 every file a stage writes is -rw-r--r-- like any new file (mkstemp alone makes 0600)."""
    dst, _, _ = reproduced
    files = [f for out in declared_outs(dst) for f in ([out] if out.is_file() else out.rglob("*")) if f.is_file()]
    assert len(files) > 20 and any(f.name == "grid.gif" for f in files) and any(f.suffix == ".mp4" for f in files)
    private = [f"{f.relative_to(dst)} {stat.filemode(f.stat().st_mode)}" for f in files
               if f.stat().st_mode & 0o044 != 0o044]
    assert private == []


def test_report_page(reproduced):
    """reports/index.html holds every section, with the run's own numbers, and embeds all its media."""
    dst, _, out = reproduced
    assert "report: reports/index.html" in out
    html = (dst / "reports/index.html").read_text()
    sections = re.findall(r'<h2 id="s\d+">([^<]+)</h2>', html)
    assert sections == ["Samples", "Reconstructions", "Training curves", "Metrics", "Data", "Params"]
    assert html.count('<img src="data:image/gif;base64,') == 2 and html.count('<img src="data:image/png;base64,') == 2
    assert not re.search(r"(src|href)=\"(?!data:|#)", html)       # no file or URL the page would fetch
    ev = json.loads((dst / "metrics/eval.json").read_text())
    assert f"null: {ev['fvd']['reason']}" in html and "n_generated=4" in html
    bpd = json.loads((dst / "metrics/prior.json").read_text())["val_bits_per_dim"]
    assert f"<td><code>val_bits_per_dim</code></td><td>{bpd:.4g}</td>" in html
    assert "<td><code>prior.n_layer</code></td><td>1</td><td>4</td><td>≠</td>" in html
    # TINY: 12 train and 4 test videos of 8 frames, 2 clips of 4 frames each
    assert "<th>class</th><th>train</th><th>test</th>" in html
    assert "<b>all clips</b></td><td><b>24</b></td><td><b>8</b>" in html
    assert "Rejected inputs: none" in html


@pytest.mark.skipif(browser.skip_reason() is not None, reason=f"browser test: {browser.skip_reason()}")
def test_report_page_in_headless_chromium(reproduced, tmp_path):
    """Real Chromium: the page makes no request beyond its own file, every image decodes, the page is not blank.
    A copy with one external image shows the request listener does see what a page fetches."""
    dst, _, _ = reproduced
    page = dst / "reports/index.html"
    visit, url = browser.open_page(page)
    assert visit.requests == [url] and visit.external_requests(url) == []
    assert len(visit.images) == 4 and all(i["complete"] and i["naturalWidth"] > 0 for i in visit.images), visit.images
    assert browser.pixel_std(visit.screenshot) > 20, "the screenshot is blank"
    (tmp_path / "report.png").write_bytes(visit.screenshot)

    leaky = tmp_path / "leaky.html"
    leaky.write_text(page.read_text().replace("</body>", '<img src="http://192.0.2.1/x.png"></body>'))
    visit, url = browser.open_page(leaky)
    assert visit.external_requests(url) == ["http://192.0.2.1/x.png"]
    assert [i["naturalWidth"] for i in visit.images][-1] == 0


def test_videogpt_from_pretrained_samples_what_the_sample_stage_wrote(reproduced, tmp_path):
    """`VideoGPT.from_pretrained("models")` with the sample params gives the stage's videos bitwise; the
    publish command's folder loads to the same model and its card carries the run's metrics."""
    dst, _, _ = reproduced
    sp = load(dst / "params.yaml").sample
    model = VideoGPT.from_pretrained(dst / "models")
    videos = model.sample(sp.n_samples, seed=sp.seed, temperature=sp.temperature, top_k=sp.top_k, top_p=sp.top_p,
                          batch_size=sp.batch_size)
    stage_videos = zarr.open_group(str(dst / "samples/samples.zarr"), mode="r")["videos"]
    np.testing.assert_array_equal(videos, stage_videos[:sp.n_samples])  # an unconditional prior: the first ones
    assert publish.main(["--save-to", str(tmp_path / "pub"), "--repo", str(dst)]) == 0
    np.testing.assert_array_equal(VideoGPT.from_pretrained(tmp_path / "pub").sample(sp.n_samples, seed=sp.seed), videos)
    card = (tmp_path / "pub/README.md").read_text()
    ev = json.loads((dst / "metrics/eval.json").read_text())
    assert f"| fvd | null: {ev['fvd']['reason']} |" in card and "| val_bits_per_dim |" in card


def test_second_repro_has_nothing_to_do(reproduced):
    dst, env, _ = reproduced
    out = run([sys.executable, "-m", "dvc", "status"], dst, env)
    assert "up to date" in out, out
    # a fresh clone has no __pycache__ beside the code the stages depend on: still nothing to do
    import shutil
    for cache in dst.glob("videogpt/**/__pycache__"):
        shutil.rmtree(cache)
    out = run([sys.executable, "-m", "dvc", "status"], dst, env)
    assert "up to date" in out, out


def test_forced_rerun_reproduces_every_output_bitwise(reproduced):
    """Same params and seed on CPU: a forced re-run of every stage gives the same hash for every out."""
    dst, env, _ = reproduced
    def hashes():
        lock = yaml.safe_load((dst / "dvc.lock").read_text())
        return {(name, out["path"]): out.get("md5") for name, stage in lock["stages"].items()
                for out in stage.get("outs", []) if not out["path"].startswith("dvclive")}
    before = hashes()
    run([sys.executable, "-m", "dvc", "repro", "-f"], dst, env, timeout=900)
    assert hashes() == before


def test_exp_run_reruns_only_the_prior_and_after(reproduced):
    dst, env, _ = reproduced
    commit(dst, env, "baseline")
    out = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "prior.n_layer=2"], dst, env, timeout=900)
    assert "Running stage 'train_prior'" in out
    for skipped in ("preprocess", "train_vqvae", "tokenize", "train_classifier"):  # the classifier reads the clips
        assert f"Running stage '{skipped}'" not in out
    show = run([sys.executable, "-m", "dvc", "exp", "show", "--csv"], dst, env)
    assert "val_bits_per_dim" in show
    # the paper-style table from the two real experiments (baseline n_layer=1, experiment n_layer=2)
    out = run([sys.executable, "-m", "pipeline.tables", "prior_size", "--out-dir", "reports/tables"], dst, env)
    csv = (dst / "reports/tables/prior_size.csv").read_text().splitlines()
    assert len(csv) == 3, out  # header + two rows
    assert [row.split(",")[0] for row in csv[1:]] == ["1", "2"], csv

    # the experiments page from the same two real experiments: both listed, their differing params, their metrics
    out = run([sys.executable, "-m", "pipeline.report", "experiments"], dst, env)
    html = (dst / "reports/experiments.html").read_text()
    names = re.findall(r"<th>([^<]+)</th>", html.split('id="s0"')[1].split("</tr>")[0])[1:]
    assert len(names) == 2 and any(n.endswith("(baseline)") for n in names), (names, out)
    assert re.search(r"<td><code>prior.n_layer</code></td><td>1</td><td>2</td>", html), html[:3000]
    bpd = re.search(r"<td><code>metrics/prior.json: val_bits_per_dim</code></td><td>([^<]+)</td><td>([^<]+)</td>", html)
    assert bpd and bpd.group(1) != bpd.group(2)
    assert html.count('<img src="data:image/png;base64,') == 1

def test_prior_seed_sweep_reuses_the_vqvae_and_its_tokens(reproduced):
    """prior.seed has its own key: a second seed of the prior trains only the prior (and what reads it), and the
    prior-size table averages the two seeds of the baseline's n_layer into one row."""
    dst, env, _ = reproduced
    run(["git", "checkout", "--", "params.yaml"], dst, env)  # the baseline's params (n_layer 1), not the last exp's
    out = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "prior.seed=1"], dst, env, timeout=900)
    assert "Running stage 'train_prior'" in out and "Running stage 'sample'" in out
    for skipped in ("preprocess", "train_vqvae", "tokenize", "fvd_real_stats", "train_classifier"):
        assert f"Running stage '{skipped}'" not in out
    run([sys.executable, "-m", "pipeline.tables", "prior_size", "--out-dir", "reports/tables"], dst, env)
    header, *rows = [r.split(",") for r in (dst / "reports/tables/prior_size.csv").read_text().splitlines()]
    runs = header.index("Runs")
    assert [(r[0], r[runs]) for r in rows] == [("1", "2"), ("2", "1")], rows   # n_layer, runs
    assert float(rows[0][2]) > 0                                             # two seeds: a sample std


def test_exp_run_of_a_longer_video_reruns_only_sample_and_evaluate(reproduced):
    """sample.n_frames=48 (12x the 4-frame clips): only the sample stage and what reads the samples run again,
    and the samples are 48 frames long, by the sliding window."""
    dst, env, _ = reproduced
    out = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "sample.n_frames=48"], dst, env, timeout=900)
    assert "Running stage 'sample'" in out and "Running stage 'evaluate'" in out
    for skipped in ("make_default_data", "preprocess", "train_vqvae", "tokenize", "train_prior", "fvd_real_stats",
                    "train_classifier"):
        assert f"Running stage '{skipped}'" not in out
    videos = zarr.open_group(str(dst / "samples/samples.zarr"), mode="r")["videos"]
    assert videos.shape == (4, 48, 16, 16, 3)  # eval.n_real x eval.n_trials
    assert len(list((dst / "samples/mp4").glob("*.mp4"))) == 2 and (dst / "samples/grid.gif").is_file()
    fvd = json.loads((dst / "metrics/eval.json").read_text())["fvd"]
    assert fvd["mean"] is None and fvd["protocol"]["generated_frames"] == 48  # null: no weights here


def test_paper_table_command_on_the_real_pipeline(reproduced):
    """`python -m pipeline.paper prior_size` on the real pipeline, with a smaller grid through its flags (2 rows
    x 2 seeds, 6 prior steps): the baseline is reproduced, the runs queued and run in DVC's temp workspaces, which
    reuse the baseline's VQ-VAE and tokens, and the table is written beside the paper's numbers."""
    dst, env, _ = reproduced
    run(["git", "checkout", "--", "."], dst, env)  # the committed baseline (earlier tests left an experiment)
    out = run([sys.executable, "-m", "pipeline.paper", "prior_size", "--rows", "1,2", "--seeds", "0", "1",
               "--set", "prior.max_steps=6", "--jobs", "2", "--commit-baseline"], dst, env, timeout=1200)
    assert "4 runs queued" in out and "4/4 runs finished" in out, out
    md = (dst / "reports/tables/prior_size_mini.md").read_text()
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in md.splitlines() if line.startswith("| ")][1:]
    assert [r[0] for r in rows] == ["1", "2", "", ""] and [r[5] for r in rows[:2]] == ["2", "2"], md  # runs
    assert all(" ± " in r[1] for r in rows[:2]), md                  # bits/dim over two prior seeds
    assert [r[-5] for r in rows] == ["2", "4", "8", "16"], md        # the paper's rows beside
    for name in ("priorsize-mini-nlayer1-s0", "priorsize-mini-nlayer2-s1"):   # what each run re-ran
        log = run([sys.executable, "-m", "dvc", "queue", "logs", name], dst, env)
        assert "Running stage 'train_prior'" in log, log
        for reused in ("preprocess", "train_vqvae", "tokenize", "train_classifier"):
            assert f"Running stage '{reused}'" not in log, log
