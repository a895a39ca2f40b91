"""A fold's model as an embedder, and the test rows it embeds (the cache's and the test shards' common part)."""

from __future__ import annotations

import dataclasses

import numpy as np

from compkit.config import ModelConfig, is_trained
from compkit.progress import Progress
from compkit.workspace import Workspace


def fold_embedder(config, model, fold: int, workspace: Workspace, device: str, progress: Progress):
    """Return (the built embedder of fold `fold`'s model on its device, embed_dataset's options)."""
    import torch

    from compkit.models.factory import build_embedder
    from compkit.training.checkpoint import load_state
    from compkit.training.device import autocast_dtype, resolve_device

    if is_trained(model):  # its weights come from the fold's checkpoint, not from the pretrained file
        if model.kind == "image":
            model = dataclasses.replace(model, pretrained=False, pretrained_path=None)
        build = build_embedder(model, config.columns)
        build.embedder.load_state_dict(load_state(workspace.best_checkpoint(model.name, fold))["embedder"])
    else:  # zero-shot: the pretrained backbone as it is (seeded, so random weights are the same in every fold)
        torch.manual_seed(model.train.seed)
        build = build_embedder(model, config.columns)
    torch_device = resolve_device(device)
    build.embedder.to(torch_device)
    options = {
        "device": torch_device,
        "batch_size": embedding_batch_size(model),
        "autocast_dtype": autocast_dtype(model.train.amp, torch_device),
        "progress": progress,
    }
    return build, options


def embedding_batch_size(model: ModelConfig) -> int:
    return model.train.batch_size * 2


def embed_test_rows(config, model, fold, workspace, build, options, test, start: int, stop: int) -> np.ndarray:
    """Return the embeddings of test rows [start, stop) by the built fold model."""
    from compkit.training.evaluate import embed_dataset

    test_inputs = build.inputs(test, workspace.data_dir / config.data.test_images)
    chosen = np.arange(start, stop)
    return embed_dataset(build.embedder, test_inputs.dataset(chosen, np.full(len(chosen), -1), train=False),
                         description=f"{model.name} fold {fold} test", **options)
