"""Safe model files: weights as safetensors, config and metadata as JSON. Nothing is unpickled.

A saved model is a folder: `model.safetensors`, `config.json` ({"config", "meta", "weights_sha256"}) and,
when saved with `save_pretrained`, a `README.md` model card. `save_model` writes one; `SavedModel` gives
VQVAE and Prior `from_pretrained` (a folder or a Hugging Face Hub repo id), `save_pretrained` and
`push_to_hub`. The models import this module, and it imports no model: the pipeline's loaders, which
name the models, are videogpt.checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from videogpt.fileio import atomic_dir, atomic_path, file_sha256, write_text

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")   # owner/name, as the Hub spells repo ids


def write_model_files(directory: Path, model: torch.nn.Module, config, meta: dict | None = None) -> None:
    """`model.safetensors` + `config.json` into an existing folder."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS) as weights:
        save_file(state, str(weights))
    payload = {"config": config_dict(config), "meta": meta or {}, "weights_sha256": file_sha256(directory / WEIGHTS)}
    write_text(directory / CONFIG, json.dumps(payload, indent=2, sort_keys=True))


def config_dict(config) -> dict:
    """A config as config.json stores it: a dataclass's fields, less those its class names in `omit_at_default`
    (keys added after models were first saved) while they hold their default, so adding such a key leaves the files
    of models that do not use it byte for byte unchanged; loading gives them their default back."""
    if not dataclasses.is_dataclass(config):
        return dict(config)
    cfg = dataclasses.asdict(config)
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for key in getattr(config, "omit_at_default", ()):
        if cfg[key] == defaults[key]:
            del cfg[key]
    return cfg


def save_model(directory: str | Path, model: torch.nn.Module, config, meta: dict | None = None) -> None:
    """Write `model.safetensors` + `config.json` into `directory`, atomically as a pair: a crash never
    leaves new weights beside an old config."""
    with atomic_dir(directory) as tmp:
        write_model_files(tmp, model, config, meta)


def load_model_files(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """Read (config dict, state dict, meta) written by `save_model`; clear error if absent."""
    directory = Path(directory)
    wpath, cpath = directory / WEIGHTS, directory / CONFIG
    for p in (wpath, cpath):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing; train the model first (dvc repro) or check the path")
    payload = json.loads(cpath.read_text())
    return payload["config"], load_file(str(wpath)), payload.get("meta", {})


def fingerprint(directory: str | Path) -> str:
    """Identity of a saved model: the sha256 of its weights file."""
    return json.loads((Path(directory) / CONFIG).read_text())["weights_sha256"]


def resolve_pretrained(path_or_repo_id: str | Path, revision: str | None = None) -> Path:
    """A local folder as it is; otherwise a Hub repo id ("owner/name"), downloaded (or taken from the
    Hub's local cache) by `videogpt.hub`. Local folders never import huggingface_hub nor touch the network."""
    path = Path(path_or_repo_id).expanduser()
    if path.exists():
        if revision is not None:
            raise ValueError(f"{path}: a local folder has no revisions (revision={revision!r})")
        return path
    if not REPO_ID.fullmatch(str(path_or_repo_id)) or ".." in str(path_or_repo_id):
        raise FileNotFoundError(f"{path_or_repo_id}: no such folder, and not a Hugging Face Hub repo id (owner/name)")
    from videogpt.hub import download
    try:
        return download(str(path_or_repo_id), revision)
    except Exception as err:  # offline, no such repo, no access: say what was tried
        raise FileNotFoundError(f"{path_or_repo_id}: no such local folder, and the Hugging Face Hub could not "
                                f"provide it as a repo id: {type(err).__name__}: {err}") from err


class Pretrained:
    """`from_pretrained`, `save_pretrained` and `push_to_hub` for a model that lives in one folder.

    A subclass implements `load_folder(directory)` (a local folder -> the model in eval mode),
    `write_folder(directory)` (the model's files into an empty folder) and `card_configs()` (what the
    model card lists)."""

    card_title = "VideoGPT model"

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, *, revision: str | None = None):
        """The model saved in a local folder, or in a Hugging Face Hub repo ("owner/name"; `revision` = a
        branch, tag or commit), in eval mode on the CPU. Only safetensors and JSON are read."""
        return cls.load_folder(resolve_pretrained(path_or_repo_id, revision))

    def save_pretrained(self, directory: str | Path, *, metrics: dict[str, dict] | None = None,
                        repo_id: str | None = None) -> Path:
        """Write the model's files and a README.md model card into `directory` (replaced atomically).

        metrics: source name -> metrics tree (e.g. {"metrics/eval.json": {...}}), listed in the card with
        their protocols. repo_id only shapes the card's loading example."""
        from videogpt.model_card import model_card
        with atomic_dir(directory) as tmp:
            self.write_folder(tmp)
            write_text(tmp / CARD, model_card(self.card_title, self.card_configs(), metrics,
                                              load_as=type(self).__name__, repo_id=repo_id))
        return Path(directory)

    def push_to_hub(self, repo_id: str, *, metrics: dict[str, dict] | None = None, private: bool = False,
                    token: str | None = None, commit_message: str = "Upload VideoGPT model") -> str:
        """`save_pretrained` into a temporary folder, then upload it to the Hub repo `repo_id` (created if
        needed) with huggingface_hub's HfApi; returns the commit URL. Needs the network and a token
        (`token=` or `hf auth login`), so this project's offline tests cover only the folder it
        uploads, not the upload itself."""
        from videogpt.hub import upload
        with tempfile.TemporaryDirectory(prefix="videogpt-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "model", metrics=metrics, repo_id=repo_id)
            return upload(folder, repo_id, private=private, token=token, commit_message=commit_message)


class SavedModel(Pretrained):
    """`Pretrained` for a model with a `config` dataclass whose files are `write_model_files`' pair.
    A subclass builds itself from its saved parts in `from_saved(config dict, state dict)`."""

    @classmethod
    def load_folder(cls, directory: str | Path):
        cfg, state, meta = load_model_files(directory)
        model = cls.from_saved(cfg, state)
        model.load_state_dict(state)
        model.saved_meta = meta       # training metadata (steps, fingerprints), written back by save_pretrained
        return model.eval()

    def write_folder(self, directory: Path) -> None:
        write_model_files(directory, self, self.config, getattr(self, "saved_meta", {}))

    def card_configs(self) -> dict[str, dict]:
        return {type(self).__name__: config_dict(self.config)}
