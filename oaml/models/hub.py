"""Pretrained weights from the Hugging Face Hub, always through its cache.

`model.pretrained: hub` takes the weights timm names for a `timm/<name>` architecture (its
`hf_hub_id`, e.g. timm/vit_base_patch16_224.orig_in21k_ft_in1k); `hf-hub:ORG/NAME` any repo of
timm weights; either may end in `@REVISION` (a branch, tag or commit) to pin it. huggingface_hub
does the fetching, so its settings apply: `HF_HOME` (put the cache on the data volume),
`HF_HUB_OFFLINE=1` (cache only: air-gapped clusters), `HF_ENDPOINT` (a mirror). The commit the
file came from and its SHA-256 go into the checkpoint's lineage. Without any hub access, a local
`pretrained_file` still works.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from oaml.io import sha256_file

HUB = "hub"
HF_PREFIX = "hf-hub:"
TIMM_PREFIX = "timm/"
# timm's hub repos hold safetensors; older ones a PyTorch pickle.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class HubError(ValueError):
    """Weights that cannot be found; the message says where they were looked for and the fix."""


@dataclass(frozen=True)
class HubWeights:
    """One weights file from the hub cache and where it came from (the lineage records it)."""

    repo_id: str
    revision: str  # the commit the file is from
    filename: str
    path: str
    sha256: str

    def lineage(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "path"}


def hub_repo(arch: str, pretrained: str) -> tuple[str, str | None]:
    """(repo id, revision or None) that `pretrained` names for architecture `arch`."""
    name, _, revision = pretrained.partition("@")
    if name.startswith(HF_PREFIX):
        repo = name[len(HF_PREFIX) :].strip("/")
        if repo.count("/") != 1:
            raise HubError(f"pretrained {pretrained!r}: expected hf-hub:ORG/NAME[@REVISION]")
        return repo, revision or None
    if name != HUB:
        raise HubError(f"pretrained {pretrained!r}: use 'hub' or 'hf-hub:ORG/NAME' (@REVISION)")
    if not arch.startswith(TIMM_PREFIX):
        raise HubError(
            f"pretrained: hub needs a timm architecture (timm/<name>), not {arch!r}; oaml's own "
            "ResNets start from random weights or an oaml checkpoint (train.init_checkpoint)"
        )
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch[len(TIMM_PREFIX) :])
    if cfg is None or not cfg.hf_hub_id:
        raise HubError(
            f"timm knows no hub weights for {arch!r}; name them as timm does (e.g. "
            "timm/vit_base_patch16_224.orig_in21k_ft_in1k) or use hf-hub:ORG/NAME"
        )
    return cfg.hf_hub_id, revision or None


def fetch_weights(arch: str, pretrained: str) -> HubWeights:
    """The weights file `pretrained` names, from the hub cache (downloaded into it where the
    hub is reachable and HF_HUB_OFFLINE is not set)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo, revision = hub_repo(arch, pretrained)
    failures = []
    for filename in WEIGHT_FILES:
        try:
            path = Path(hf_hub_download(repo, filename, revision=revision))
        except (EntryNotFoundError, LocalEntryNotFoundError) as exc:
            failures.append(f"{filename}: {type(exc).__name__}")
            continue
        except Exception as exc:  # network, auth, a repo that is not there
            raise HubError(_where(repo, revision, f"{type(exc).__name__}: {exc}")) from None
        commit = path.parent.name if path.parent.parent.name == "snapshots" else revision
        return HubWeights(repo, str(commit), filename, str(path), sha256_file(path))
    raise HubError(_where(repo, revision, "; ".join(failures)))


def _where(repo: str, revision: str | None, why: str) -> str:
    home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    offline = " (HF_HUB_OFFLINE is set: cache only)" if os.environ.get("HF_HUB_OFFLINE") else ""
    return (
        f"no weights of {repo}@{revision or 'main'} in the hub cache under {home}{offline} "
        f"({why}); fetch them once where the hub (or HF_ENDPOINT, a mirror) is reachable, "
        "or set model.pretrained_file to a local file"
    )
