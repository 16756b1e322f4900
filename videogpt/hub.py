"""The Hugging Face Hub, thinly: download a saved model's folder, upload one.

huggingface_hub is imported here only, and only when one of these is called: loading a local folder
never imports it nor touches the network. Uploading needs the network and a token, so the project's
offline tests cannot exercise it; it is kept to two calls of huggingface_hub's public API.
"""
from __future__ import annotations

from pathlib import Path

# What a saved model holds. Anything else in a repo (pickles above all) is never downloaded.
MODEL_FILES = ["*.json", "*.safetensors", "*.md"]


def download(repo_id: str, revision: str | None = None) -> Path:
    """The local folder of the Hub repo `repo_id` at `revision`, downloaded into (or found in) the Hub cache."""
    from huggingface_hub import snapshot_download
    return Path(snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=MODEL_FILES))


def upload(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
           commit_message: str = "Upload VideoGPT model") -> str:
    """Create the model repo `repo_id` if needed and upload `folder` to it as one commit; returns its URL."""
    from huggingface_hub import HfApi
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder),
                               commit_message=commit_message)
    return str(getattr(commit, "commit_url", commit))
