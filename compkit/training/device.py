"""The torch device a run uses, and its mixed-precision dtype."""

from __future__ import annotations

import torch

from compkit.errors import BackendUnavailable, ParameterError


def resolve_device(device: str) -> torch.device:
    """Return the torch device for 'auto', 'cpu' or 'cuda', failing clearly when CUDA is asked for but absent."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("--device cuda: no CUDA GPU is visible to torch")
    if device not in ("cpu", "cuda"):
        raise ParameterError("device", device, "must be auto, cpu or cuda")
    return torch.device(device)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Return the autocast dtype for the config's amp setting ('auto' uses bf16/fp16 on CUDA only)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "auto" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16
