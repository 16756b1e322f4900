"""Run every benchmark script in bench/, collect their JSON into bench/results.json, print a markdown summary.

    python -m bench.run_all [--threads N] [--full] [--only vqvae,prior_train] [--out bench/results.json]
                           [--reference PATH]

Each script runs in its own subprocess (fresh interpreter, its own peak RSS), with quick settings unless
--full is given, under a per-script time limit; a script that fails or times out is recorded with its error
and the rest still run. The markdown table printed at the end is the README's benchmark table.

On a shared machine use --threads 1, or export OMP_WAIT_POLICY=PASSIVE: with OpenMP's default spin-waiting, a
2-thread step whose second core is busy with another process runs 3-100x slower (measured; see the warning the
table gets when the load average was at least the core count).
Scripts in bench/ not listed in RUNS are run with --threads only, except RUN_ALONE's (gpu.py, loss_curves.py).
--reference PATH (a checkout of wilson1yan/VideoGPT) makes reference_configs time the reference's side too, and
runs compare (the sampler against the reference, interleaved; skipped without it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import log, loadavg, machine_info

BENCH = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"common.py", "run_all.py", "__init__.py", "reference_side.py"}
# Run alone, not here: gpu.py needs a CUDA device (its CPU form is a test); loss_curves.py trains for minutes.
RUN_ALONE = {"gpu.py", "loss_curves.py"}

# (id, script, quick args, full args, time limit in s), in the order they run. A script may appear more than once.
RUNS = [
    ("vqvae", "vqvae.py", ["--quick"], [], 240),
    ("prior_train", "prior_train.py", ["--quick"], [], 240),
    ("tokenize", "tokenization.py", ["--quick"], [], 180),
    ("memory", "memory.py", ["--quick"], [], 180),
    ("preprocess", "preprocess.py", ["--quick"], [], 180),
    ("engine", "engine.py", ["--quick"], [], 400),  # needs the cluster extra and the default run's outputs
    ("sample_default", "sample.py", ["--configs", "default", "--batch-sizes", "1,16"], ["--configs", "default"], 180),
    ("sample_large", "sample.py", ["--configs", "large", "--batch-sizes", "1", "--window", "2"],
     ["--configs", "large"], 240),
    ("i3d", "i3d.py", ["--batch-size", "2", "--runs", "2", "--warmup", "1"], [], 180),
    ("reference_configs", "reference_configs.py", ["--quick"], [], 300),
    ("compare", "compare.py", ["--quick"], [], 600),  # only with --reference
    ("ceilings", "ceilings.py", ["--quick"], [], 240),
    ("long_sampling", "long_sampling.py", ["--quick"], [], 240),
]


def last_json(stdout: str):
    """The last JSON object printed on stdout (scripts may print one line or an indented document)."""
    text = stdout.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    starts = [i for i, ch in enumerate(text) if ch == "{" and (i == 0 or text[i - 1] == "\n")]
    for i in reversed(starts):
        try:
            obj, _ = decoder.raw_decode(text[i:])
            return obj
        except json.JSONDecodeError:
            continue
    return None


def run_script(name: str, args: list[str], threads: int, limit: float) -> dict:
    """Run bench/<name> with --threads and args; return {ok, seconds, command, result | error, loadavg}."""
    cmd = [sys.executable, "-m", f"bench.{Path(name).stem}", "--threads", str(threads), *args]
    log(f"running {' '.join(cmd[1:])}")
    t0 = time.perf_counter()
    entry = {"command": " ".join(["python", *cmd[1:]]), "loadavg_before": loadavg()}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=BENCH.parent)
    except subprocess.TimeoutExpired as e:
        entry.update(ok=False, error=f"timed out after {limit:.0f} s",
                     stderr_tail=(e.stderr or b"")[-2000:].decode(errors="replace")
                     if isinstance(e.stderr, bytes) else (e.stderr or "")[-2000:])
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        return entry
    entry["seconds"] = round(time.perf_counter() - t0, 1)
    entry["loadavg_after"] = loadavg()
    result = last_json(proc.stdout)
    if proc.returncode != 0 or result is None:
        entry.update(ok=False, error=f"exit code {proc.returncode}" if proc.returncode else "no JSON on stdout",
                     stderr_tail=proc.stderr[-2000:])
    else:
        entry.update(ok=True, result=result)
    log(f"{name} {' '.join(args)}: {'ok' if entry['ok'] else entry['error']} in {entry['seconds']} s")
    return entry


# --------------------------------------------------------------------------------------------
# The summary table


def _get(d, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _pct(x) -> str:
    return f"{100 * x:.0f}%" if isinstance(x, (int, float)) else "–"


def _num(x, digits=1) -> str:
    if not isinstance(x, (int, float)):
        return "–"
    return f"{x:,.{digits}f}"


def _mfu(r: dict) -> str:
    return f"{_pct(r.get('mfu'))} / {_pct(r.get('mfu_vs_conv_peak'))}"


def table_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(what, configuration, throughput, MFU / note) rows for the README."""
    rows = []
    vq = _get(results, "vqvae", "result")
    if vq:
        for name, r in vq.get("results", {}).items():
            c = r["vqvae"]
            desc = (f"{name}: {c['n_hiddens']} ch, {c['n_res_layers']} res blocks, "
                    f"{'x'.join(map(str, c['input_shape']))} clips")
            if "bf16" in r.get("precision", ""):
                desc += ", bf16 autocast"
            rows.append(("VQ-VAE train (fwd+bwd+Adam)", f"{desc}, batch {r['train']['batch_size']}",
                         f"{_num(r['train']['clips_per_s'], 2)} clips/s",
                         _mfu(r["train"])))
            rows.append(("VQ-VAE encode", f"{desc}, batch {r['encode']['batch_size']}",
                         f"{_num(r['encode']['clips_per_s'], 1)} clips/s",
                         _mfu(r["encode"])))
    pr = _get(results, "prior_train", "result")
    if pr:
        for name, r in pr.get("results", {}).items():
            c = r["prior"]
            desc = (f"{name}: {c['n_layer']} layers x {c['n_embd']}, {'x'.join(map(str, c['latent_shape']))} "
                    f"latent, attn dropout {c['attn_dropout']}, batch {r['batch_size']}"
                    + (", bf16 autocast" if "bf16" in r.get("precision", "") else ""))
            rows.append(("Prior train (fwd+bwd+AdamW)", desc, f"{_num(r['tokens_per_s'], 0)} tokens/s",
                         _mfu(r)))
    tok = _get(results, "tokenize", "result")
    if tok:
        c = tok["config"]
        rows.append(("Tokenize (build_token_store)", f"{c['clips']} clips {'x'.join(map(str, c['clip_shape'][:3]))}, "
                     f"batch {c['batch_size']}", f"{_num(tok['headline']['clips_per_s'], 1)} clips/s",
                     f"reading clips: {_pct(tok['headline']['read_share'])} of the time"))
    pre = _get(results, "preprocess", "result")
    if pre:
        c = pre.get("config", {})
        rows.append(("Preprocess (build_clip_store)", f"{c.get('videos')} videos x {c.get('frames_per_video')} frames "
                     f"320x240 -> {c.get('resolution')}px, {c.get('workers')} worker(s)",
                     f"{_num(pre.get('library_frames_per_s'), 0)} frames/s",
                     f"{_pct(pre.get('ratio'))} of bare ffmpeg decode"))
    mem = _get(results, "memory", "result")
    if mem:
        for stage, h in mem.get("headline", {}).items():
            rows.append((f"Peak RSS, {stage}", "1x vs 4x the data (fresh process each); in brackets: with "
                         "MALLOC_MMAP_THRESHOLD_=1MB",
                         f"{_num(h['peak_rss_mb_1x'], 0)} -> {_num(h['peak_rss_mb_4x'], 0)} MB "
                         f"({_num(h.get('fixed_mmap_threshold_peak_rss_mb_1x'), 0)} -> "
                         f"{_num(h.get('fixed_mmap_threshold_peak_rss_mb_4x'), 0)} MB)",
                         f"ratio {h['ratio_4x_1x']:.2f} ({h.get('fixed_mmap_threshold_ratio_4x_1x', 0):.2f}); "
                         f"{'flat' if h['flat'] else 'NOT flat'}"))
    for smp in (_get(results, key, "result") for key in results if key.startswith("sample")):
        for entry in (smp or {}).get("results", []):
            for run in entry.get("runs", []):
                p = entry["prior"]
                rows.append(("Sampling (KV cache)", f"{entry['config']}: {p['n_layer']} layers x {p['n_embd']}, "
                             f"{'x'.join(map(str, p['latent_shape']))} latent, batch {run['batch_size']}",
                             f"{_num(run['cached_tokens_per_s'], 0)} tokens/s",
                             f"{_num(run['speedup_cached_vs_recompute'], 1)}x vs recompute"))
    i3d = _get(results, "i3d", "result")
    if i3d:
        c = i3d.get("config", {})
        rows.append(("I3D features (FVD)", f"batch {c.get('batch_size')}, {c.get('frames')}x{c.get('input_size')}^2 "
                     f"-> 224", f"{_num(i3d.get('clips_per_s'), 2)} clips/s", ""))
    ref = _get(results, "reference_configs", "result")
    if ref:
        for row, r in ref.get("results", {}).items():
            if "skipped" in r:
                rows.append((f"Reference config: {row}", "", "skipped", r["skipped"]))
                continue
            per_position = r["unit"] == "s/position"
            time_ = f"{1e3 * r['median']:.2f} ms/position" if per_position else f"{r['median']:.3f} s/step"
            how = "timed alongside" if "reference_measured" in r else "recorded figure"
            note = (f"{r['ratio']:.2f}x the reference ({1e3 * r['reference']:.2f} ms/position, {how})" if per_position
                    else f"{r['ratio']:.2f}x the reference ({r['reference']:.3f} s, {how})") if "ratio" in r else ""
            rows.append((f"Reference config: {row}", r["config"], time_, note))
    ceil = _get(results, "ceilings", "result")
    cmp = _get(results, "compare", "result")
    for row, r in (cmp or {}).get("rows", {}).items():
        for side in ("eager", "compiled"):
            rows.append((f"Sampling vs the reference (compare): {row}, {side}", "reference config, 1,024 positions + "
                         "decode", f"{r[side]['ms_per_position']:.2f} ms/position",
                         f"{r[side]['ratio']:.2f}x the reference ({r['reference']['ms_per_position']:.2f} ms/position, "
                         "interleaved)"))
    if ceil:
        for smp in (v for k, v in ceil.items() if k.startswith("sampler_b")):
            mb = sum(smp["bytes_per_step"].values()) / 1e6
            rows.append(("Ceiling: sampler (compiled step), reference config",
                         f"batch {smp['batch']}, {smp.get('threads', 1)} thread(s)",
                         f"{smp['ms_per_position']:.2f} ms/position",
                         f"floor {smp['floor_ms_per_position']:.2f} ms ({smp['measured_over_floor']}x): {mb:.1f} MB "
                         f"read per step at {smp['stream_gbps']} GB/s" + (f"; eager {smp['eager_ms_per_position']:.2f} ms"
                                                                          if "eager_ms_per_position" in smp else "")))
    vq = (ceil or {}).get("vqvae_train")
    if vq:
        rows.append(("Ceiling: VQ-VAE train step, reference config", "batch 4 of 16x64x64",
                     f"{vq['s_per_step']:.3f} s/step", f"3D convolutions {_pct(vq['conv_share'])} of the time: at most "
                     f"{vq['ceiling_vs_conv_only']:.2f}x faster without changing them"))
    for name, entry in results.items():
        if not entry.get("ok"):
            rows.append((f"bench {name}", entry.get("command", ""), "failed", entry.get("error", "")))
    return rows


def markdown(results: dict, meta: dict) -> str:
    m = meta["machine"]
    lines = [f"Measured {meta['date'][:10]} on {m['cpu']} ({m['cpu_count']} cores, {meta['threads']} torch threads, "
             f"load average {meta['loadavg_before'][0]:.1f} -> {meta['loadavg_after'][0]:.1f}), torch {m['torch']}. "
             "MFU = model FLOP/s (multiply-add = 2; training = forward + backward) / a peak measured in the same "
             "process: first the float32 2048^2 matmul (MKL sgemm, sampled just before each step), then a large "
             "float32 oneDNN conv3d. On AVX-512 AMD CPUs oneDNN's kernels run about 2x faster than MKL's sgemm, so "
             "conv-heavy or bf16 work can exceed 100% of the matmul peak; the conv peak is the stricter ceiling.",
             "",
             "| what | configuration | throughput | MFU (matmul / conv peak) or note |",
             "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in table_rows(results)]
    busy = max(meta["loadavg_before"][:1] + meta["loadavg_after"][:1]) >= m["cpu_count"]
    if busy and meta["threads"] > 1 and (m.get("OMP_WAIT_POLICY") or "").upper() != "PASSIVE":
        lines += ["", f"Warning: the machine was busy (load average >= {m['cpu_count']}) and {meta['threads']} torch threads "
                  "spin-wait in OpenMP (OMP_WAIT_POLICY unset): multi-threaded steps collapse when a core is taken by "
                  "another process. Re-run with --threads 1 or OMP_WAIT_POLICY=PASSIVE for numbers that mean something."]
    return "\n".join(lines)


def main(argv=None) -> dict:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="passed to every script (default: all cores)")
    ap.add_argument("--full", action="store_true", help="each script's default (longer) settings")
    ap.add_argument("--only", default=None, help="comma-separated run ids or script names (e.g. vqvae,sample)")
    ap.add_argument("--out", default=str(BENCH / "results.json"))
    ap.add_argument("--reference", metavar="PATH", default=None,
                    help="a checkout of wilson1yan/VideoGPT, passed to reference_configs: its side is timed here too")
    args = ap.parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))

    found = sorted(p.name for p in BENCH.glob("*.py") if p.name not in NOT_BENCHMARKS | RUN_ALONE)
    runs = [r for r in RUNS if r[1] in found]
    runs += [(Path(f).stem, f, [], [], 240) for f in found if f not in {r[1] for r in RUNS}]
    if args.only:
        wanted = {w.removesuffix(".py") for w in args.only.split(",")}
        runs = [r for r in runs if r[0] in wanted or r[1].removesuffix(".py") in wanted]
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "threads": threads, "loadavg_before": loadavg(),
            "machine": machine_info(), "quick": not args.full, "runs": [r[0] for r in runs]}
    t0 = time.perf_counter()
    results = {}
    for run_id, script, quick, full, limit in runs:
        if script == "compare.py" and not args.reference:
            continue
        extra = ["--reference", args.reference] if args.reference and script in ("reference_configs.py",
                                                                                  "compare.py") else []
        limit *= (3 if args.full else 1) * (3 if extra else 1)
        results[run_id] = run_script(script, (full if args.full else quick) + extra, threads, limit)
    meta["loadavg_after"] = loadavg()
    meta["total_seconds"] = round(time.perf_counter() - t0, 1)
    table = markdown(results, meta)
    doc = {**meta, "results": results, "markdown": table}
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(table)
    log(f"wrote {args.out} ({meta['total_seconds']} s)")
    return doc


if __name__ == "__main__":
    main()
