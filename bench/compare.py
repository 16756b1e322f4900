"""Sampling against the reference implementation (wilson1yan/VideoGPT), ours and theirs timed in ONE interleaved run:
issue 24's bar is the batch-4 row at >= 3x the reference.

    python -m bench.compare --reference PATH [--batches 4,1,32] [--runs 3] [--threads 2]

PATH is a checkout of the reference (the folder holding its `videogpt/` package; bench/reference_side.py says how
it is imported without copying anything). Each row is bench.reference_configs's `sample_b{n}` at the reference's
config (prior 4 layers x 252, 4 heads, 4x16x16 latent, 512 codes; VQ-VAE 64 channels, downsampling 4x4x4): the
project's `sample` (sample_tokens over all 1,024 positions + VQ-VAE decode, float32) with the decode step eager
(sample.compile false, what `auto` picks for one batch on a CPU) and compiled (true), against the reference's
`VideoGPT.sample` (its own key/value cache, then its VQ-VAE decoder). One warm-up call each (the compiled side's is
its compile, reported as `compile_s`), then `runs` rounds of timed calls alternating eager, compiled, reference, so
that all three see the same machine state. ms/position = seconds / 1,024; ratio = reference median / project median
(> 1: the project is faster). The load average before and after each row is recorded: on a shared machine read the
ratios, not the absolute times, and set OMP_WAIT_POLICY=PASSIVE: the reference decodes on all threads, and with
OpenMP's spin-waiting its steps collapse when another process holds a core (TQDM_DISABLE=1 silences its
per-position progress bar). Prints one JSON object.
"""
from __future__ import annotations

import statistics

from bench.common import emit, loadavg, log, parser, set_threads
from bench.reference_configs import sampling, timed
from bench.reference_side import build as build_reference
from bench.reference_side import import_reference

TARGET_RATIO_B4 = 3.0  # issue 24


def compare_row(batch: int, runs: int, reference) -> dict:
    """One batch size: eager, compiled and the reference, interleaved."""
    sides = {"eager": sampling(batch, compile=False), "compiled": sampling(batch, compile=True),
             "reference": build_reference(reference, f"sample_b{batch}")}
    first = {name: timed(fn, 1) for name, (fn, _) in sides.items()}  # warm-up; the compiled one compiles
    times = {name: [] for name in sides}
    for _ in range(runs):
        for name, (fn, per) in sides.items():
            times[name].append(timed(fn, per))
    median = {name: statistics.median(t) for name, t in times.items()}
    row = {name: {"ms_per_position": round(1e3 * median[name], 3),
                  "times_ms_per_position": [round(1e3 * t, 3) for t in times[name]]} for name in sides}
    for name in ("eager", "compiled"):
        row[name]["ratio"] = round(median["reference"] / median[name], 2)
    row["compiled"]["compile_s"] = round(first["compiled"] - median["compiled"] * sides["compiled"][1], 1)
    return row


def main(argv=None) -> dict:
    ap = parser(__doc__.split("\n\n")[0])
    ap.set_defaults(threads=2)
    ap.add_argument("--reference", metavar="PATH", required=True, help="a checkout of wilson1yan/VideoGPT")
    ap.add_argument("--batches", default="4,1,32", help="batch sizes, comma-separated (default 4,1,32)")
    ap.add_argument("--runs", type=int, default=None, help="timed calls per side and row (default 3; --quick: 2)")
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    runs = args.runs or (2 if args.quick else 3)
    reference = import_reference(args.reference)
    rows = {}
    for batch in (int(b) for b in args.batches.split(",")):
        load0 = loadavg()
        row = rows[f"sample_b{batch}"] = {**compare_row(batch, runs, reference), "loadavg_before_after": [load0, loadavg()]}
        log(f"sample_b{batch}: reference {row['reference']['ms_per_position']} ms/position; eager "
            f"{row['eager']['ms_per_position']} ({row['eager']['ratio']}x), compiled {row['compiled']['ms_per_position']} "
            f"({row['compiled']['ratio']}x, {row['compiled']['compile_s']} s to compile)")
    out = {"bench": "compare", "threads": threads, "runs": runs, "reference": args.reference, "rows": rows}
    if "sample_b4" in rows:
        out["target_b4"] = {"ratio": TARGET_RATIO_B4, "compiled": rows["sample_b4"]["compiled"]["ratio"],
                            "reached": rows["sample_b4"]["compiled"]["ratio"] >= TARGET_RATIO_B4}
    return emit(out)


if __name__ == "__main__":
    main()
