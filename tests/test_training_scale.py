"""Training at paper scale, checked on CPU: gradient accumulation (trainer.accumulate_grad_batches), activation
checkpointing (trainer.checkpoint_activations), their validation, and the refusal of FSDP."""
from __future__ import annotations

import copy

import pytest
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader

from videogpt.config import Params, ParamsError, TrainerParams, parse, to_dict
from videogpt.lightning import PriorModule, make_trainer
from videogpt.prior import Prior, PriorConfig
from videogpt.vqvae import VQVAE, VQVAEConfig


def tiny_prior(dropout: float = 0.0, seed: int = 0) -> Prior:
    torch.manual_seed(seed)
    cfg = PriorConfig(latent_shape=(2, 2, 2), n_codes=8, embedding_dim=4, n_layer=2, n_head=2, n_embd=12,
                      dropout=dropout, attn_dropout=dropout)
    return Prior(cfg, torch.randn(8, 4))


def tiny_vqvae(seed: int = 0) -> VQVAE:
    torch.manual_seed(seed)
    return VQVAE(VQVAEConfig(input_shape=(4, 8, 8), n_hiddens=12, res_hiddens=6, n_res_layers=2,
                             downsample=(2, 2, 2), n_codes=8, embedding_dim=4, n_heads=2))


class FirstStepGradients(Callback):
    """The gradients Lightning hands to the first optimizer step (before clipping)."""

    def __init__(self):
        self.grads = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.grads is None:
            self.grads = {n: p.grad.detach().clone() for n, p in pl_module.model.named_parameters()}


def first_step_gradients(tmp_path, tokens, batch_size: int, accumulate: int) -> dict:
    prior = tiny_prior()
    module = PriorModule(prior, lr=1e-3, weight_decay=0.0, warmup_steps=0, max_steps=1, log_every_n_steps=1)
    tp = TrainerParams(accelerator="cpu", accumulate_grad_batches=accumulate, log_every_n_steps=1)
    trainer = make_trainer(tp, name="t", max_steps=1, ckpt_dir=tmp_path / "ckpt", live_dir=tmp_path / "live",
                           val_every=100, checkpoint_every=100, seed=0)
    grads = FirstStepGradients()
    trainer.callbacks.append(grads)
    trainer.fit(module, DataLoader([{"tokens": t} for t in tokens], batch_size=batch_size, shuffle=False))
    assert trainer.global_step == 1
    return grads.grads


def test_accumulated_gradients_equal_those_of_one_large_batch(tmp_path):
    """k = 2 batches of b = 2 token grids, accumulated, give the gradients of one batch of 4 (mean losses over equal
    halves average to the mean over the whole)."""
    tokens = torch.randint(0, 8, (4, 2, 2, 2), generator=torch.Generator().manual_seed(1))
    big = first_step_gradients(tmp_path / "big", tokens, batch_size=4, accumulate=1)
    acc = first_step_gradients(tmp_path / "acc", tokens, batch_size=2, accumulate=2)
    half = first_step_gradients(tmp_path / "half", tokens, batch_size=2, accumulate=1)  # control: first half only
    assert big.keys() == acc.keys()
    for name in big:
        torch.testing.assert_close(acc[name], big[name], rtol=1e-5, atol=1e-7, msg=name)
    assert any(not torch.allclose(half[n], big[n], rtol=1e-3, atol=1e-6) for n in big), "the control cannot differ"


def grads_and_state(model, run):
    loss = run(model)
    loss.backward()
    return ({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
            {n: b.clone() for n, b in model.named_buffers()})


@pytest.mark.parametrize("kind", ["vqvae", "prior"])
def test_checkpointed_blocks_give_the_gradients_and_state_of_plain_blocks(kind, monkeypatch):
    """One training step's gradients and buffers with activation checkpointing equal those without: the prior with
    dropout (the recomputation replays the masks), the VQ-VAE with its BatchNorms in train mode (the recomputation
    does not update their running statistics a second time) and its codebook's EMA update."""
    import videogpt.prior as prior_mod
    import videogpt.vqvae as vqvae_mod
    module = prior_mod if kind == "prior" else vqvae_mod
    calls, real = [], module.checkpoint
    monkeypatch.setattr(module, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    if kind == "prior":
        plain = tiny_prior(dropout=0.3)
        tokens = torch.randint(0, 8, (3, 2, 2, 2), generator=torch.Generator().manual_seed(2))
        run = lambda m: m.loss(tokens)
    else:
        plain = tiny_vqvae()
        video = torch.rand(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(2)) - 0.5
        run = lambda m: m(video)["loss"]
    ckpt = copy.deepcopy(plain)
    ckpt.set_activation_checkpointing(True)
    plain.train(), ckpt.train()
    torch.manual_seed(5)
    g0, s0 = grads_and_state(plain, run)
    assert calls == []
    torch.manual_seed(5)
    g1, s1 = grads_and_state(ckpt, run)
    assert len(calls) == (2 * 2 if kind == "vqvae" else 2)  # every residual block / transformer block
    assert g0.keys() == g1.keys() and len(g0) > 0
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-6, atol=1e-8, msg=name)
    for name in s0:
        assert torch.equal(s1[name], s0[name]), name
    if kind == "vqvae":
        assert int(s0["encoder.res.0.net.0.num_batches_tracked"]) == 1  # one update, not two


def test_checkpointing_is_used_only_with_gradients(monkeypatch):
    """The checkpoint wrapper runs for a training forward with gradients, never under no_grad (evaluation)."""
    import videogpt.prior as prior_mod
    calls = []
    real = prior_mod.checkpoint
    monkeypatch.setattr(prior_mod, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = tiny_prior()
    model.set_activation_checkpointing(True)
    tokens = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    with torch.no_grad():
        model.loss(tokens)
    assert calls == []
    model.loss(tokens)
    assert len(calls) == model.config.n_layer


def params_with(**trainer) -> dict:
    raw = to_dict(Params())
    raw["trainer"].update(trainer)
    return raw


@pytest.mark.parametrize("value", [0, -1, 1.5, "2"])
def test_accumulate_grad_batches_is_validated(value):
    with pytest.raises(ParamsError, match="trainer.accumulate_grad_batches"):
        parse(params_with(accumulate_grad_batches=value))


@pytest.mark.parametrize("accelerator", ["cpu", "gpu", "auto"])
def test_fsdp_is_refused_before_any_work_naming_the_keys(accelerator):
    with pytest.raises(ParamsError) as err:
        parse(params_with(strategy="fsdp", accelerator=accelerator, devices=2))
    assert str(err.value).startswith("trainer.strategy: fsdp")
    assert ("trainer.accelerator: cpu" in str(err.value)) == (accelerator == "cpu")


def test_new_keys_at_their_defaults_leave_the_run_key_unchanged():
    """The run key (resume, and the VQ-VAE's saved metadata) of a run at the defaults is what it was before the
    keys existed; a non-default value enters it."""
    from videogpt.config import DataParams, PriorParams, VQVAEParams
    from videogpt.training import LATER_KEYS, run_key_section
    key = run_key_section(TrainerParams())
    assert key == {"accelerator": "auto", "devices": 1, "num_nodes": 1, "strategy": "auto", "precision": "32",
                   "compile": False, "log_every_n_steps": 25}
    for name in LATER_KEYS[TrainerParams]:
        changed = {"accumulate_grad_batches": 4, "checkpoint_activations": True, "deterministic": False}[name]
        assert run_key_section(TrainerParams(**{name: changed}))[name] == changed
    for section in (VQVAEParams, PriorParams):   # a training's own seed: only when set
        assert "seed" not in run_key_section(section()) and run_key_section(section(seed=3))["seed"] == 3
    # the data section as the VQ-VAE's key held it before the WebDataset keys: the default config.json's bytes
    assert list(run_key_section(DataParams())) == ["source", "format", "split_ratio", "split_seed", "ucf_split",
                                                   "resolution", "sequence_length", "frame_stride", "clip_stride",
                                                   "fps", "num_workers", "decode_timeout", "hflip"]
    assert run_key_section(DataParams(label_key="label"))["label_key"] == "label"


def graph_breaks(fn, *args) -> list:
    import torch._dynamo
    torch._dynamo.reset()
    return torch._dynamo.explain(fn)(*args).break_reasons


def test_vqvae_training_forward_has_no_graph_break():
    """No host sync (e.g. reading the codebook's `initialized` flag) in the training forward, neither on the first
    step (data-dependent codebook init) nor after it: torch.compile sees one graph."""
    model = tiny_vqvae().train()
    video = torch.rand(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0)) - 0.5
    assert model.codebook.needs_init
    assert graph_breaks(model.forward, video) == []
    assert not model.codebook.needs_init and bool(model.codebook.initialized)
    assert graph_breaks(model.forward, video) == []


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_prior_training_forward_has_no_graph_break(dropout):
    model = tiny_prior(dropout=dropout).train()
    tokens = torch.randint(0, 8, (3, 2, 2, 2), generator=torch.Generator().manual_seed(0))
    assert graph_breaks(model.forward, tokens) == []


def test_codebook_init_flag_follows_a_loaded_state():
    """The codebook's Python-side init flag (read by forward instead of the buffer) follows load_state_dict both
    ways: a loaded trained codebook is not re-initialised, a loaded fresh one is."""
    trained, fresh = tiny_vqvae(), tiny_vqvae()
    trained.train()(torch.rand(2, 3, 4, 8, 8) - 0.5)
    other = tiny_vqvae()
    other.load_state_dict(trained.state_dict())
    assert not other.codebook.needs_init
    other.load_state_dict(fresh.state_dict())
    assert other.codebook.needs_init


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vqvae", "prior"])
def test_compiled_training_runs_and_matches_eager_loss(tmp_path, kind):
    """trainer.compile: true trains both models on CPU (torch.compile of their training forward, inductor), and the
    first step's loss equals the eager one to float tolerance."""
    from videogpt.lightning import VQVAEModule

    losses = {}

    class Loss(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.setdefault(compile, []).append(float(outputs["loss"]))

    for compile in (False, True):
        if kind == "vqvae":
            module = VQVAEModule(tiny_vqvae(), lr=1e-3, log_every_n_steps=1, compile=compile)
            data = [(v, 0) for v in torch.rand(4, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0)) - 0.5]
        else:
            module = PriorModule(tiny_prior(), lr=1e-3, weight_decay=0.0, warmup_steps=0, max_steps=2,
                                 log_every_n_steps=1, compile=compile)
            data = [{"tokens": t} for t in torch.randint(0, 8, (4, 2, 2, 2), generator=torch.Generator().manual_seed(0))]
        trainer = make_trainer(TrainerParams(accelerator="cpu", compile=compile, log_every_n_steps=1), name="t",
                               max_steps=2, ckpt_dir=tmp_path / f"c{compile}", live_dir=tmp_path / f"l{compile}",
                               val_every=100, checkpoint_every=100, seed=0)
        trainer.callbacks.append(Loss())
        trainer.fit(module, DataLoader(data, batch_size=2))
        assert trainer.global_step == 2
    assert len(losses[True]) == 2
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-4)


def test_axial_attention_past_the_sdpa_batch_limit_equals_one_unsliced_call(monkeypatch):
    """Along t the axial attention folds B*h*w into SDPA's batch: 1 x 256 x 257 = 65,792 > 65,535, CUDA's limit.
    The sliced computation equals one call over the whole batch, output and gradients (tiny head dims keep it
    cheap on CPU)."""
    import torch.nn.functional as F

    import videogpt.vqvae as vqvae_mod
    torch.manual_seed(0)
    attn = vqvae_mod.AxialAttention(dim=3, n_heads=1)
    x = torch.randn(1, 2, 256, 257, 3, requires_grad=True)
    batches, real = [], F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda q, *a: batches.append(q.shape[0]) or real(q, *a))

    def run():
        x.grad = None
        y = attn(x)
        y.square().sum().backward()
        return y.detach(), x.grad.clone()

    sliced = run()
    assert max(batches) <= vqvae_mod.SDPA_MAX_BATCH and 256 * 257 - vqvae_mod.SDPA_MAX_BATCH in batches
    batches.clear()
    monkeypatch.setattr(vqvae_mod, "SDPA_MAX_BATCH", 10 ** 9)
    whole = run()
    assert 256 * 257 in batches
    torch.testing.assert_close(sliced[0], whole[0], rtol=0, atol=0)
    torch.testing.assert_close(sliced[1], whole[1], rtol=1e-6, atol=1e-7)


def test_only_rank_zero_clears_stale_checkpoints(tmp_path, monkeypatch):
    """prepare_resume: a rank other than 0 (as its launcher's environment says) never deletes nor writes; with a
    stale key it starts fresh, with the current key and a last.ckpt it resumes, like rank 0."""
    from videogpt.lightning import LAST, RUN_KEY_FILE, prepare_resume
    (tmp_path / RUN_KEY_FILE).write_text('{"old": 1}')
    (tmp_path / LAST).write_text("stale")
    for var, value in (("LOCAL_RANK", "1"), ("RANK", "3"), ("NODE_RANK", "1")):
        with monkeypatch.context() as m:
            m.setenv(var, value)
            assert prepare_resume(tmp_path, {"new": 1}) is None
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([RUN_KEY_FILE, LAST])
    assert prepare_resume(tmp_path, {"new": 1}) is None  # rank 0: clears and writes the new key
    assert [p.name for p in tmp_path.iterdir()] == [RUN_KEY_FILE]
    (tmp_path / LAST).write_text("current")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert prepare_resume(tmp_path, {"new": 1}) == str(tmp_path / LAST)


def test_checkpointed_generator_states_restore_the_stream():
    """_save_rng / _load_rng: after a load the torch and python generators continue exactly where they were
    saved (the checkpoint holds one state per rank; one here)."""
    import random

    from videogpt.lightning import _load_rng, _save_rng
    torch.manual_seed(3)
    random.seed(3)
    checkpoint = {}
    _save_rng(checkpoint)
    assert len(checkpoint["rng"]["ranks"]) == 1
    expected = (torch.rand(4), random.random())
    torch.manual_seed(99)
    random.seed(99)
    _load_rng(checkpoint)
    got = (torch.rand(4), random.random())
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1]


def test_uint8_clips_converted_in_the_module_give_the_float_pipeline_bitwise(tmp_path):
    """ClipDataset(uint8=True) batches, converted by the Lightning module on the device, give the VQ-VAE exactly the
    float batches the float dataset gives (values and, through the model, every output bit), flips included."""
    import numpy as np
    import zarr

    from videogpt.data.dataset import ClipDataset
    from videogpt.lightning import as_video
    rng = np.random.default_rng(0)
    root = zarr.open_group(str(tmp_path / "clips.zarr"), mode="w")
    g = root.create_group("train")
    g.create_array("clips", data=rng.integers(0, 256, (4, 4, 8, 8, 3), dtype=np.uint8), chunks=(1, 4, 8, 8, 3))
    g.create_array("labels", data=np.zeros(4, np.int32))
    batches = {}
    for uint8 in (False, True):
        torch.manual_seed(0)
        ds = ClipDataset(tmp_path / "clips.zarr", "train", hflip=True, uint8=uint8)
        batches[uint8] = as_video(next(iter(DataLoader(ds, batch_size=4)))[0])
    assert batches[True].dtype == torch.float32 and torch.equal(batches[True], batches[False])
    outs = []
    for uint8 in (False, True):
        model = tiny_vqvae().train()
        outs.append(model(batches[uint8]))
    for key in ("loss", "recon"):
        assert torch.equal(outs[0][key], outs[1][key])


def test_validation_perplexity_is_that_of_the_pooled_codes(tmp_path):
    """val/perplexity is exp(entropy) of the histogram of every validation code (all batches, all ranks), not a
    mean of per-batch perplexities (which would under-report the codebook's usage)."""
    from videogpt.lightning import VQVAEModule
    model = tiny_vqvae()
    module = VQVAEModule(model, lr=1e-3, log_every_n_steps=1)
    video = torch.rand(6, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0)) - 0.5
    data = [(v, 0) for v in video]
    # 40 steps: BatchNorm's running statistics (eval mode) settle enough for the codes to differ
    trainer = make_trainer(TrainerParams(accelerator="cpu", log_every_n_steps=1), name="t", max_steps=40,
                           ckpt_dir=tmp_path / "c", live_dir=tmp_path / "l", val_every=40, checkpoint_every=100, seed=0)
    trainer.fit(module, DataLoader(data, batch_size=2), DataLoader(data, batch_size=2))
    model.eval()
    with torch.no_grad():
        codes = [model(video[i:i + 2])["codes"] for i in range(0, 6, 2)]
    counts = torch.bincount(torch.cat(codes).flatten(), minlength=8).double()
    p = counts / counts.sum()
    pooled = float(torch.exp(-(p * torch.log(p + 1e-10)).sum()))
    per_batch = [float(model(video[i:i + 2])["perplexity"]) for i in range(0, 6, 2)]
    assert float(trainer.callback_metrics["val/perplexity"]) == pytest.approx(pooled, rel=1e-6)
    assert abs(sum(per_batch) / 3 - pooled) > 1e-3 * pooled  # the two definitions differ on this data


@pytest.mark.parametrize("deterministic", [True, False])
def test_trainer_deterministic_param_reaches_torch(tmp_path, deterministic):
    """trainer.deterministic: true (the default) turns on torch's deterministic algorithms for the run (CPU bytes
    repeatable); false leaves them off."""
    before = torch.are_deterministic_algorithms_enabled()
    try:
        make_trainer(TrainerParams(accelerator="cpu", deterministic=deterministic), name="t", max_steps=1,
                     ckpt_dir=tmp_path / "c", live_dir=tmp_path / "l", val_every=1, checkpoint_every=1, seed=0)
        assert torch.are_deterministic_algorithms_enabled() == deterministic
    finally:
        torch.use_deterministic_algorithms(before)
