"""The params schema: every bad value is rejected with the key named, before any work."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import paths
from videogpt.config import Params, ParamsError, load, parse, to_dict

ROOT = Path(__file__).resolve().parents[1]


def repo_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def with_override(key: str, value) -> dict:
    raw = repo_params()
    *parents, leaf = key.split(".")
    node = raw
    for p in parents:
        node = node[p]
    node[leaf] = value
    return raw


def test_repo_params_yaml_is_valid_and_lists_every_default():
    # params.yaml spells out every key, so `dvc exp run -S` can override any of them
    assert to_dict(load(ROOT / "params.yaml")).keys() == to_dict(Params()).keys()
    raw = repo_params()
    for section, values in to_dict(Params()).items():
        if isinstance(values, dict):
            assert set(raw[section]) == set(values), section


@pytest.mark.parametrize("key, value, expected", [
    ("prior.n_layr", 4, "prior.n_layr: unknown key"),
    ("vqvae.n_codes", "many", "vqvae.n_codes: 'many' is not an integer"),
    ("vqvae.n_codes", 1, "vqvae.n_codes: 1 is out of range"),
    ("data.resolution", 0, "data.resolution: 0 is out of range"),
    ("data.resolution", -8, "data.resolution"),
    ("data.sequence_length", 0, "data.sequence_length: 0 is out of range"),
    ("data.format", "hdf5", "data.format: 'hdf5' is not allowed"),
    ("prior.condition", "text", "prior.condition"),
    ("vqvae.attention", "yes", "vqvae.attention: 'yes' is not true/false"),
    ("vqvae.downsample", [2, 2], "vqvae.downsample"),
    ("vqvae.downsample", [3, 4, 4], "vqvae.downsample: [3, 4, 4] has 3 on axis T"),
    ("data.resolution", 30, "data.resolution: 30 is not divisible by the spatial downsampling"),
    ("data.sequence_length", 9, "data.sequence_length: 9 is not divisible by the temporal downsampling"),
    ("prior.n_embd", 130, "prior.n_embd: 130 is not divisible by prior.n_head=4"),
    ("sample.top_p", 1.5, "sample.top_p: 1.5 is out of range"),
    ("sample.n_frames", 17, "sample.n_frames: 17 is not a multiple of the VQ-VAE's temporal downsampling 4"),
    ("sample.n_frames", 4, "sample.n_frames: 4 must be an integer >= the training clip length 16"),
    ("sample.window_stride", 5, "sample.window_stride: 5 must be an integer in 1..4"),
    ("trainer.precision", "fp8", "trainer.precision"),
    ("seed", 1.5, "seed: 1.5 is not an integer"),
    ("storage.root", "nosuch://b/k", "storage.root: nosuch://b/k: fsspec knows no protocol 'nosuch'"),
])
def test_bad_values_name_the_key(key, value, expected):
    with pytest.raises(ParamsError) as err:
        parse(with_override(key, value))
    assert expected in str(err.value)


def test_unknown_section_and_frame_conditioning_length():
    raw = repo_params() | {"priors": {}}
    with pytest.raises(ParamsError, match="priors: unknown key"):
        parse(raw)
    for condition in ("frames", "frames+actions"):
        raw = with_override("prior.condition", condition)
        raw["prior"]["n_cond_frames"] = raw["data"]["sequence_length"]
        with pytest.raises(ParamsError, match="prior.n_cond_frames"):
            parse(raw)
    assert parse(with_override("prior.condition", "actions")).prior.condition == "actions"
    assert parse(with_override("sample.n_frames", 48)).sample.n_frames == 48


def test_types_are_coerced_where_harmless():
    p = parse(with_override("vqvae.lr", 1))            # an int where a float is expected
    assert p.vqvae.lr == 1.0 and isinstance(p.vqvae.lr, float)
    p = parse(with_override("trainer.precision", 32))  # YAML gives 32 for "32"
    assert p.trainer.precision == "32"


def test_stage_rejects_bad_params_before_work(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_override("vqvae.n_layers", 3)))
    proc = subprocess.run([sys.executable, "-m", "stages.train_vqvae"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode != 0
    assert "vqvae.n_layers: unknown key" in proc.stderr
    assert not (tmp_path / "models").exists()


def test_dvc_yaml_declares_the_paths_of_pipeline_paths():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    declared = set()
    for stage in dvc["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                declared.add(next(iter(out)) if isinstance(out, dict) else out)
    for name in ("DEFAULT_VIDEOS", "CLIPS", "MANIFEST", "REJECTED", "TOKENS", "VQVAE_DIR", "PRIOR_DIR",
                 "SAMPLES", "REAL_STATS", "VQVAE_METRICS", "PRIOR_METRICS", "EVAL_METRICS"):
        assert str(getattr(paths, name)) in declared, name
    for name in ("VQVAE_LIVE", "PRIOR_LIVE"):   # what dvclive writes there: its summary and its curves
        live = getattr(paths, name)
        assert {str(live / "metrics.json"), str(live / "plots" / "metrics")} <= declared, name
    # resume checkpoints are scratch, not outs: a declared out that is neither cached nor in git is missing in a
    # queued experiment's temp workspace and makes DVC re-run the stage there instead of reusing the baseline's
    assert not any(str(d).startswith("checkpoints") for d in declared)


def test_each_training_has_its_own_seed_defaulting_to_the_top_level_one():
    p = parse({"seed": 3})
    assert (p.training_seed("vqvae"), p.training_seed("prior")) == (3, 3)
    p = parse({"seed": 3, "prior": {"seed": 7}})
    assert (p.training_seed("vqvae"), p.training_seed("prior")) == (3, 7)
    # the stages' DVC params: prior.seed is not a dependency of train_vqvae or tokenize, so a prior.seed sweep
    # reuses one VQ-VAE and its tokens (checked on a real `dvc exp run` in test_pipeline_e2e)
    stages = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]
    for name in ("train_vqvae", "tokenize"):
        assert not any(str(k).split(".")[0] == "prior" for k in stages[name].get("params", [])), name
    with pytest.raises(ParamsError, match="prior.seed"):
        parse({"prior": {"seed": -1}})
