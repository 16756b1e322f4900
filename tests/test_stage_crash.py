"""A crash in any stage: SIGKILL in the middle of its work, then `dvc repro` must finish with the outputs of an
uninterrupted run, bit for bit, and nothing on the way may look complete.

One uninterrupted run of the real pipeline (tiny params, 16-frame clips so that the I3D stages do real work
with randomly initialised weights in the published layout) is the baseline. Each case copies it, starts
`dvc repro --single-item <stage>` (its dvc.lock entry and the run cache removed, so it really runs) in its own
process group, waits until the stage is visibly in the middle of its work (a file it writes on the way appears,
or it has read the I3D weights: see MID_WORK; no test hook in the code), and SIGKILLs the whole group: DVC, the
stage and its workers die at once, as in a pre-empted job. Then:
  * none of the stage's outs may exist (every stage writes to a temporary path and renames at the end), and
    `dvc status` must see the stage as changed;
  * a plain `dvc repro` must re-run it and finish; every out of every stage must then equal the baseline's,
    file by file, and dvc.lock must equal the baseline's: so no mix of old and new files survives, and the
    stages downstream were not re-run;
  * the training stages resume from their last checkpoint instead, which the README documents as statistically,
    not bitwise, equal: there `dvc repro <stage>` must resume (start_step > 0) and leave complete, consistent
    outs (see RESUMED);
  * no temporary file or folder may be left beside the outs.
"""
import ctypes
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from videogpt.metrics.i3d import expected_state_keys

TINY = {
    "default_data": {"n_train": 8, "n_test": 4, "resolution": 32, "n_frames": 16, "digit_size": 14, "fps": 8},
    "data": {"resolution": 16, "sequence_length": 16, "num_workers": 2},
    "vqvae": {"n_hiddens": 16, "res_hiddens": 8, "n_res_layers": 1, "downsample": [4, 4, 4], "n_codes": 16,
              "embedding_dim": 8, "max_steps": 12, "batch_size": 4, "checkpoint_every": 3, "val_every": 6},
    "tokenize": {"batch_size": 4},
    "prior": {"n_layer": 1, "n_head": 2, "n_embd": 16, "max_steps": 12, "warmup_steps": 0, "batch_size": 4,
              "checkpoint_every": 3, "val_every": 6},
    "sample": {"n_samples": 2, "batch_size": 2},
    "eval": {"n_real": 4, "batch_size": 2},
    "trainer": {"accelerator": "cpu", "log_every_n_steps": 2},  # CPU bytes on a GPU host too
}
pytestmark = pytest.mark.slow  # ~3 CPU-minutes, some 10 minutes on a busy 2-core box: run by .ci/run, not by `pytest`
SHARD_CLIPS = 2  # preprocess writes a shard (and its progress record) every 2 clips: 6 shards here
LIVE_LOGS = ("dvclive/",)  # training curves, written while a stage runs by design


def run(cmd, cwd, env, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def dvc(*args):
    return [sys.executable, "-m", "dvc", *args]


class ReadsOf:
    """How many times a file was closed after reading (inotify IN_CLOSE_NOWRITE): shows that a stage has
    loaded a model, where it leaves nothing on disk until it has finished."""
    IN_CLOSE_NOWRITE = 0x10

    def __init__(self, path: Path):
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, str(path).encode(), self.IN_CLOSE_NOWRITE) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {path}")
        self.count = 0

    def __call__(self) -> int:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return self.count
        offset = 0
        while offset < len(data):
            _, _, _, name_len = struct.unpack_from("iIII", data, offset)
            offset += 16 + name_len
            self.count += 1
        return self.count

    def close(self):
        os.close(self.fd)


def any_file(folder: Path, pattern: str) -> bool:
    return folder.is_dir() and any(folder.rglob(pattern))


# stage -> (where it is killed, a condition on (repo, reads of its WATCHED file) that holds only mid-work)
MID_WORK = {
    "make_default_data": ("a video written into data/default_videos.tmp",
                          lambda d, reads: any_file(d / "data/default_videos.tmp", "*.mp4")),
    "preprocess": ("a shard and its progress record written in data/clips.zarr.tmp",
                   lambda d, reads: (d / "data/clips.zarr.tmp/progress.json").exists()),
    "train_vqvae": ("first checkpoint (step 3 of 12) written",
                    lambda d, reads: (d / "checkpoints/vqvae/last.ckpt").exists()),
    "tokenize": ("train split encoded, test split not yet",
                 lambda d, reads: (d / "data/tokens.zarr.tmp/done/train-0").exists()),
    "train_prior": ("first checkpoint (step 3 of 12) written",
                    lambda d, reads: (d / "checkpoints/prior/last.ckpt").exists()),
    "sample": ("sampling done, writing samples.tmp (first MP4 there)",
               lambda d, reads: any_file(d / "samples.tmp", "*.mp4")),
    # each reads the weights twice before the I3D features: their sha256 (protocol), then torch.load
    "fvd_real_stats": ("I3D loaded, computing features of the real clips", lambda d, reads: reads() >= 2),
    "evaluate": ("recon/bits-per-dim done, I3D loaded, computing features", lambda d, reads: reads() >= 2),
    "report": ("VQ-VAE loaded, reconstructing clips for the page", lambda d, reads: reads() >= 1),
    # the classifier is written only once trained: watch its training batches being read from the store
    "train_classifier": ("training, a few batches read from the clip store", lambda d, reads: reads() >= 4),
}
I3D = "<i3d weights>"
WATCHED = {"fvd_real_stats": I3D, "evaluate": I3D, "report": "models/vqvae/model.safetensors",
           "train_classifier": "data/clips.zarr/train/clips/c"}   # a folder: reads of the shards in it


def finished_training(model: str, steps: int):
    """Check of a resumed training stage's outs: a model whose weights are those its config names, metrics of
    the whole run, and no checkpoint left behind."""
    def check(repo: Path):
        config = json.loads((repo / "models" / model / "config.json").read_text())
        weights = (repo / "models" / model / "model.safetensors").read_bytes()
        assert config["weights_sha256"] == hashlib.sha256(weights).hexdigest()
        assert json.loads((repo / "metrics" / f"{model}.json").read_text())["steps"] == steps
        assert not any((repo / "checkpoints" / model).iterdir())
    return check


RESUMED = {"train_vqvae": finished_training("vqvae", TINY["vqvae"]["max_steps"]),
           "train_prior": finished_training("prior", TINY["prior"]["max_steps"])}


@pytest.fixture(scope="module")
def i3d_weights(tmp_path_factory) -> Path:
    """Random I3D weights in the published key layout (the real ones cannot be downloaded here)."""
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.rand(shape, generator=gen) * 0.1 + (1.0 if k.endswith("running_var") else 0.0)
             for k, shape in expected_state_keys().items()}
    path = tmp_path_factory.mktemp("i3d") / "i3d_pretrained_400.pt"
    torch.save(state, path)
    return path


def declared_outs(repo: Path) -> dict[str, list[tuple[str, bool]]]:
    """stage -> [(path, persist)] for its outs and metrics."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    result = {}
    for name, stage in stages.items():
        outs = []
        for kind in ("outs", "metrics"):
            for out in stage.get(kind, []):
                path, opts = (next(iter(out.items())) if isinstance(out, dict) else (out, {}))
                outs.append((path, bool((opts or {}).get("persist"))))
        result[name] = outs
    return result


def fingerprint(repo: Path) -> dict[str, str]:
    """sha256 of every file of every out."""
    digests = {}
    for outs in declared_outs(repo).values():
        for out, _ in outs:
            path = repo / out
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for f in files:
                digests[f.relative_to(repo).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return digests


def temporaries(repo: Path) -> list[str]:
    """Files and folders named like a temporary output ('x.tmp', '.x.abc.tmp') outside .git and .dvc."""
    found = []
    for folder, subfolders, files in os.walk(repo):
        subfolders[:] = [d for d in subfolders if d not in (".git", ".dvc")]
        found += [os.path.relpath(os.path.join(folder, n), repo) for n in subfolders + files if ".tmp" in n]
    return sorted(found)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, repo_copy, i3d_weights):
    """The uninterrupted run every case is compared with."""
    repo = tmp_path_factory.mktemp("baseline") / "repo"
    repo.mkdir()
    env = repo_copy(repo, TINY | {"eval": TINY["eval"] | {"i3d_weights": str(i3d_weights)}})
    env["VIDEOGPT_SHARD_CLIPS"] = str(SHARD_CLIPS)
    started = time.perf_counter()
    run(dvc("repro"), repo, env, timeout=900)
    eval_metrics = yaml.safe_load((repo / "metrics/eval.json").read_text())
    assert eval_metrics["fvd"]["mean"] is not None, "the I3D stages did not do their work"
    print(f"\nbaseline dvc repro: {time.perf_counter() - started:.1f} s")
    return repo, env, fingerprint(repo), yaml.safe_load((repo / "dvc.lock").read_text())


def forget_finished_run(repo: Path, stage: str) -> None:
    """Make DVC see `stage` as never run with these inputs, as in the first run after a change of params: its
    dvc.lock entry and the run cache go (else `dvc repro` would check its outs out of the cache, not run it).
    Its outs stay in the workspace: the old files a killed run must not mix with its new ones."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    del lock["stages"][stage]
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    shutil.rmtree(repo / ".dvc/cache/runs")


RESULTS = []


@pytest.fixture(scope="module", autouse=True)
def results_table():
    yield
    if RESULTS:
        print("\n| stage | killed when | after the kill | dvc repro | seconds |\n|---|---|---|---|---|")
        for row in RESULTS:
            print("| " + " | ".join(map(str, row)) + " |")


def stages_to_test() -> list[str]:
    stages = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]
    return [name for name, stage in stages.items() if stage.get("outs") or stage.get("metrics")]


@pytest.mark.parametrize("stage", stages_to_test())
def test_sigkill_mid_stage_then_repro_gives_the_uninterrupted_outputs(stage, baseline, i3d_weights, tmp_path):
    assert stage in MID_WORK, f"stage '{stage}' writes outputs: add where to kill it to MID_WORK"
    where, mid_work = MID_WORK[stage]
    source, env, expected, expected_lock = baseline
    started = time.perf_counter()
    repo = tmp_path / "repo"
    shutil.copytree(source, repo, symlinks=True)
    forget_finished_run(repo, stage)
    watched = WATCHED.get(stage, I3D)
    reads = ReadsOf(i3d_weights if watched == I3D else repo / watched)
    try:
        proc = subprocess.Popen(dvc("repro", "--single-item", stage), cwd=repo, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 300
        while not mid_work(repo, reads) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)  # DVC, the stage and its workers: nothing gets to clean up
        proc.wait()
        seen = mid_work(repo, reads)
    finally:
        reads.close()
    assert proc.returncode == -signal.SIGKILL and seen, f"{stage} finished (rc {proc.returncode}) before: {where}"

    outs = declared_outs(repo)[stage]
    leftovers = [out for out, persist in outs if not persist and not out.startswith(LIVE_LOGS)
                 and (repo / out).exists()]
    assert not leftovers, f"{stage} killed mid-work left outs that look complete: {leftovers}"
    status = run(dvc("status", stage), repo, env)
    assert f"{stage}:" in status, status

    if stage in RESUMED:
        # Training resumes from its last checkpoint, statistically but not bitwise equal to an uninterrupted run
        # (README, "Resume after interruption"): its outs are checked for completeness and consistency, and the
        # stages downstream are left for DVC to re-run (not run here: it would cost minutes and test nothing new).
        out = run(dvc("repro", stage), repo, env, timeout=900)
        assert f"Running stage '{stage}'" in out and f"[{stage}] start_step=" in out, out[-3000:]
        start = int(out.split(f"[{stage}] start_step=")[1].split()[0])
        assert 0 < start < TINY[stage.removeprefix("train_")]["max_steps"], out[-3000:]  # resumed, not restarted
        RESUMED[stage](repo)
        assert {k: v for k, v in fingerprint(repo).items() if k.split("/")[0] in ("data", "cache")} == \
            {k: v for k, v in expected.items() if k.split("/")[0] in ("data", "cache")}
        assert f"{stage}:" not in run(dvc("status", stage), repo, env)
        outcome = f"resumed from step {start}, finished: complete and consistent outs"
    else:
        out = run(dvc("repro"), repo, env, timeout=900)
        assert f"Running stage '{stage}'" in out
        assert fingerprint(repo) == expected
        assert yaml.safe_load((repo / "dvc.lock").read_text()) == expected_lock  # order aside
        assert "up to date" in run(dvc("status"), repo, env)
        outcome = "re-ran, every out equals the baseline's"
    assert temporaries(repo) == []
    RESULTS.append((stage, where, "no out left, stage seen as changed", outcome,
                    f"{time.perf_counter() - started:.0f}"))
