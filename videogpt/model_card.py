"""Metrics as a reader sees them (each with its protocol) and the README.md model card of a saved model.

Metrics files (metrics/*.json of the pipeline) are trees. A node holding "protocol" describes how the
numbers below it were measured ("what" says what they are; "reason" why a value is null); every other
leaf is a number. `metric_rows` flattens a tree into (metric, value, protocol) rows: the run's report
page and the model card both show them.
"""
from __future__ import annotations

import json

META_KEYS = ("protocol", "what", "reason", "comparable_with")  # parts of a metric node that describe it


def fmt(value) -> str:
    """Numbers to 4 significant digits, null as 'null', booleans as in YAML, everything else as written."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def protocol_text(protocol) -> str:
    if isinstance(protocol, dict):
        return "; ".join(f"{k}={fmt(v)}" for k, v in protocol.items())
    return str(protocol)


def metric_rows(tree: dict, protocol: str = "", prefix: str = "") -> list[list[str]]:
    """[metric, value, protocol] rows of a metrics tree; a node's protocol applies to everything below it.

    {"fvd": {"value": None, "reason": "no weights", "what": "FD", "protocol": {"n": 4}}} gives
    ["fvd", "null: no weights", "FD; n=4"]. `dvc exp show` drops null leaves, so a node with a reason and
    no value or mean is a null value too. A per-trial node ({"trials", "mean", "std", ...}) is one row, "mean ± std
    over n trials"."""
    if "protocol" in tree:
        protocol = protocol_text(tree["protocol"])
        if tree.get("what"):
            protocol = f"{tree['what']}; {protocol}"
    if "comparable_with" in tree:  # an FVD: which published numbers it stands beside, first
        why = tree["protocol"].get("not_comparable_because") if isinstance(tree.get("protocol"), dict) else None
        label = ("comparable with " + ", ".join(tree["comparable_with"]) if tree["comparable_with"] else
                 "comparable with no published number" + (f" ({'; '.join(why)})" if why else ""))
        protocol = f"{label}; {protocol}"
    measured = {k: v for k, v in tree.items() if k not in META_KEYS}
    if "reason" in tree and not {"value", "mean"} & tree.keys():  # e.g. {"n_trials": 1, "reason": ...} from DVC
        measured = {"value": None}
    if {"trials", "mean", "std"} <= measured.keys():  # a per-trial metric: one row, mean ± population std
        name = prefix.rstrip(".") or "value"
        if measured["mean"] is None:
            return [[name, f"null: {tree.get('reason') or 'no reason given'}", protocol]]
        n = len(measured["trials"])
        spread = f" ± {fmt(measured['std'])} over {n} trials" if n > 1 else ""
        return [[name, fmt(measured["mean"]) + spread, protocol]]
    rows = []
    for key, value in measured.items():
        name = prefix.rstrip(".") if key == "value" and prefix else f"{prefix}{key}"
        if isinstance(value, dict):
            rows += metric_rows(value, protocol, name + ".")
        elif value is None:
            rows.append([name, f"null: {tree.get('reason') or 'no reason given'}", protocol])
        else:
            rows.append([name, fmt(value), protocol])
    return rows


def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def model_card(title: str, configs: dict[str, dict], metrics: dict[str, dict] | None = None,
               load_as: str = "VideoGPT", repo_id: str | None = None) -> str:
    """README.md of a saved model: how to load it, its configuration, and every metric with its protocol.

    configs: part name -> config dict (e.g. {"vqvae": {...}, "prior": {...}}); metrics: source name (e.g.
    "metrics/eval.json") -> metrics tree. The front matter makes the Hugging Face Hub list it as a video model."""
    where = repo_id or "path/or/hub-id"
    lines = ["---", "library_name: videogpt", "tags:", "- videogpt", "- video-generation", "- vq-vae", "---", "",
             f"# {title}", "",
             "A VideoGPT model (VQ-VAE video tokenizer + GPT prior over its codes), saved as safetensors with "
             "a JSON config. Nothing in it is unpickled when it loads.", "", "```python",
             f"from videogpt import {load_as}", f'model = {load_as}.from_pretrained("{where}")']
    if load_as == "VideoGPT":
        lines += ["videos = model.sample(4, seed=0)      # uint8 (4, T, H, W, 3)",
                  "codes = model.encode(videos)         # (4, t, h, w) code grid",
                  "again = model.decode(codes)          # uint8 (4, T, H, W, 3)"]
    lines += ["```", ""]
    for part, cfg in configs.items():
        lines += [f"## Configuration: {part}", "", "| key | value |", "|---|---|"]
        lines += [f"| {_md(k)} | {_md(fmt(v))} |" for k, v in cfg.items()] + [""]
    lines += ["## Metrics", ""]
    if not metrics:
        lines += ["No metrics were saved with this model.", ""]
    for source, tree in (metrics or {}).items():
        lines += [f"From `{source}`:", "", "| metric | value | protocol |", "|---|---|---|"]
        lines += [f"| {_md(n)} | {_md(v)} | {_md(p)} |" for n, v, p in metric_rows(tree)] + [""]
    return "\n".join(lines)
