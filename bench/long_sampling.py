"""Time per generated frame as videos grow past the training length (the sliding-window sampler).

    python -m bench.long_sampling [--threads N] [--n-frames 16,32,64,128] [--batch-size 4] [--quick]

Prints one JSON object. The models are the default run's (the schema's defaults, which params.yaml holds: 16-frame
32 px clips, a 4x8x8 latent), randomly initialised: speed does not depend on the weights. For each n_frames, a
batch of videos is generated end to end with `videogpt.sampling.sample` (the sliding window when n_frames
exceeds the training length, then the blended windowed decode), median of a few runs after a warm-up;
the token sampling and the decoding are also timed apart. Per generated frame the sampler runs the same
number of sequential positions whatever the length (a window adds window_stride latent frames for
window_stride * h * w steps), plus one batched prefill per window and about two decodes per frame, so
the time per frame should stay about constant.
"""
from __future__ import annotations

import time

import torch

from bench.common import emit, log, parser, set_threads, summarize, time_runs
from videogpt.config import Params
from videogpt.prior import Prior, PriorConfig
from videogpt.sampling import sample, sample_tokens, sample_tokens_sliding, tokens_to_videos, window_starts
from videogpt.vqvae import VQVAE, VQVAEConfig


def build(params: Params) -> tuple[Prior, VQVAE]:
    d = params.data
    torch.manual_seed(0)
    vq_cfg = VQVAEConfig.from_params(params.vqvae, (d.sequence_length, d.resolution, d.resolution))
    vqvae = VQVAE(vq_cfg).eval()
    prior = Prior(PriorConfig.from_params(params.prior, vq_cfg, n_classes=0, frame_shape=(d.resolution,) * 2),
                  vqvae.codebook.embeddings.detach().clone())
    torch.nn.init.normal_(prior.head.weight, std=0.02)  # a non-degenerate distribution
    return prior.eval(), vqvae


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--n-frames", default=None,
                    help="video lengths, comma-separated (default: 1, 2, 4 and 8 times the default clip length)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    params = Params()
    clip = params.data.sequence_length
    lengths = ([int(n) for n in args.n_frames.split(",")] if args.n_frames else
               [clip, 2 * clip, 4 * clip, 8 * clip])[:3 if args.quick else None]
    prior, vqvae = build(params)
    t, h, w = prior.config.latent_shape
    f = params.data.sequence_length // t
    bs = args.batch_size
    results = []
    for n_frames in lengths:
        n_latent = n_frames // f
        if n_latent == t:
            tokens_fn = lambda: sample_tokens(prior, bs, seed=0, batch_size=bs)
        else:
            tokens_fn = lambda: sample_tokens_sliding(prior, bs, n_latent, seed=0, batch_size=bs)
        total = summarize(time_runs(lambda: sample(prior, vqvae, bs, n_frames=n_frames, seed=0, batch_size=bs),
                                    warmup=1, runs=args.runs))
        tokens = tokens_fn()
        t0 = time.perf_counter()
        tokens_to_videos(vqvae, tokens, bs, window=t)
        decode_s = time.perf_counter() - t0
        per_frame = total["median_s"] / n_frames
        row = {"n_frames": n_frames, "latent_frames": n_latent,
               "windows": len(window_starts(n_latent, t, max(1, t // 2))), "batch_size": bs,
               "total": total, "decode_s": round(decode_s, 4),
               "ms_per_generated_frame": round(1000 * per_frame, 2),
               "ms_per_generated_frame_per_video": round(1000 * per_frame / bs, 2)}
        results.append(row)
        log(f"n_frames={n_frames}: {row['ms_per_generated_frame']} ms per frame (batch of {bs})")
    base = results[0]["ms_per_generated_frame"]
    for row in results:
        row["relative_to_shortest"] = round(row["ms_per_generated_frame"] / base, 3)
    emit({"bench": "long_sampling", "latent_shape": [t, h, w], "frames_per_latent_frame": f,
          "window_stride": max(1, t // 2), "prior_params": prior.num_params(), "torch_threads": threads,
          "results": results})


if __name__ == "__main__":
    main()
