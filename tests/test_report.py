"""pipeline.report's pieces on hand-made inputs, GIF encoding, and umask-respecting atomic writes.

The report stage on a real run, the browser test and the experiments page built from real DVC
experiments are in tests/test_pipeline_e2e.py (they share its one tiny pipeline run)."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import report, tables
from videogpt.config import Params
from videogpt.fileio import atomic_path, write_json
from videogpt.model_card import metric_rows
from videogpt.visualize import encode_gif

FIXTURE = Path(__file__).parent / "data" / "exp_show.json"


def test_encode_gif_round_trip():
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (8, 3), dtype=np.uint8)          # <= 256 colours: GIF keeps them exactly
    frames = palette[rng.integers(0, 8, (5, 6, 7))]
    data = encode_gif(frames, fps=4)
    assert data == encode_gif(frames, fps=4)                         # same frames, same bytes
    gif = Image.open(io.BytesIO(data))
    assert gif.n_frames == 5 and gif.size == (7, 6) and gif.info["duration"] == 250 and gif.info["loop"] == 0
    for t in range(5):
        gif.seek(t)
        np.testing.assert_array_equal(np.asarray(gif.convert("RGB")), frames[t])
    with pytest.raises(ValueError, match="uint8 frames"):
        encode_gif(frames.astype(np.float32), fps=4)


def test_atomic_writes_respect_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "a.bin") as tmp:
            tmp.write_bytes(b"x")
        write_json(tmp_path / "b.json", {"k": 1})
    finally:
        os.umask(old)
    for name in ("a.bin", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name   # not mkstemp's 0600
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert (tmp_path / "a.bin").read_bytes() == b"x" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin",
                                                                                                      "b.json"]


def test_metric_rows_carry_protocols_and_reasons():
    """A node's protocol covers everything below it; a null value shows its reason (also when `dvc exp show`
    dropped the null and kept only the reason)."""
    proto = {"split": "test", "n_real": 4}
    tree = {"fvd": {"value": None, "reason": "no I3D weights", "what": "FD", "protocol": proto},
            "r_fvd": {"reason": "no I3D weights", "protocol": proto},
            "recon": {"nmse": 0.5, "psnr": 20.25, "protocol": {"split": "test", "n": 4}},
            "test_bits_per_dim": {"value": 2.0, "protocol": {"unit": "bits"}},
            "steps": 6, "protocol": {"split": "test", "n": 8}}
    assert metric_rows(tree) == [
        ["fvd", "null: no I3D weights", "FD; split=test; n_real=4"],
        ["r_fvd", "null: no I3D weights", "split=test; n_real=4"],
        ["recon.nmse", "0.5", "split=test; n=4"],
        ["recon.psnr", "20.25", "split=test; n=4"],
        ["test_bits_per_dim", "2", "unit=bits"],
        ["steps", "6", "split=test; n=8"],
    ]


def test_params_section_marks_what_differs_from_the_defaults():
    params = dataclasses.replace(Params(), seed=3, prior=dataclasses.replace(Params().prior, n_layer=8))
    html = report.params_section(params)
    changed = re.findall(r'<tr class="changed"><td><code>([^<]+)</code>', html)
    assert changed == ["seed", "prior.n_layer"]
    assert "<td><code>prior.n_head</code></td><td>4</td><td>4</td><td></td>" in html
    assert "<td><code>prior.n_layer</code></td><td>8</td><td>4</td><td>≠</td>" in html
    assert html.startswith(f"<p>2 of {len(tables.flat_params(report.to_dict(params)))} values differ")


def test_live_curves_read_dvclive_tsv(tmp_path):
    root = tmp_path / "plots" / "metrics"
    for rel, text in {"train/loss.tsv": "step\tloss\n1\t3.0\n3\t2.5\n", "val/loss.tsv": "step\tloss\n2\t2.9\n",
                      "lr.tsv": "step\tlr\n1\t0.1\n", "epoch.tsv": "step\tepoch\n1\t0\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    panels = report.live_curves(tmp_path)
    assert set(panels) == {"loss", "lr"}
    assert [(line.label, line.steps, line.values) for line in panels["loss"]] == [
        ("train", [1.0, 3.0], [3.0, 2.5]), ("val", [2.0], [2.9])]
    png = report.chart_png(panels)
    assert png == report.chart_png(panels) and Image.open(io.BytesIO(png)).size[0] > 500


def test_experiments_page_from_captured_dvc_output():
    """Real `dvc exp show --json` output (tests/data/exp_show.json): 10 runs, their differing params and metrics."""
    records, skipped = tables.load_records(json.loads(FIXTURE.read_text()))
    curve = {r.rev: report.Line(r.rev, [1.0, 2.0], [3.0, 2.0 + i]) for i, r in enumerate(records)}
    html = report.experiments_page(records, skipped, {"dvclive/prior/plots/metrics/train/bits_per_dim.tsv": curve})
    params_table = html.split('id="s0"')[1].split("</table>")[0]
    keys = re.findall(r"<tr class=\"\"><td><code>([^<]+)</code>", params_table)
    # the experiments vary the seed, prior.n_layer, vqvae.n_codes, vqvae.downsample, vqvae.attention with
    # vqvae.n_res_layers, and eval.i3d_weights
    assert sorted(keys) == sorted(["seed", "prior.n_layer", "vqvae.n_codes", "vqvae.downsample", "vqvae.attention",
                                   "vqvae.n_res_layers", "eval.i3d_weights"])
    for r in records:
        assert f"<th>{r.name}" in params_table
    assert "<td><code>metrics/prior.json: val_bits_per_dim</code></td>" in html
    assert "null: no I3D weights: eval.i3d_weights is null" in html and ">140<" in html   # FVD of n_layer 2, seed 0
    assert html.count('<img src="data:image/png;base64,') == 1 and "Not shown" in html and "(queued)" in html
