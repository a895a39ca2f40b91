"""The fine-tuning recipe's keys: margin warm-up, dynamic margins, frozen-backbone epochs, augmentation, flip TTA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from test_config import MINIMAL as TEXT_ONLY

from compkit.config import AugmentSettings, DynamicMargin, HeadSettings, parse_config
from compkit.errors import ConfigError
from compkit.models.heads import ArcMarginHead, class_margins
from compkit.models.image import ImageEmbedder, image_transforms
from compkit.schema import to_plain
from compkit.training.loop import _schedule_epoch

MINIMAL = TEXT_ONLY.replace('text = "title"', 'text = "title"\nimage = "image"')
IMAGE_MODEL = """
[[models]]
name = "cnn"
kind = "image"
backbone = "test_resnet"
image_size = 32
"""


def test_margin_grows_linearly_over_the_warmup_epochs():
    head = HeadSettings(margin=0.5, margin_start=0.2, margin_warmup_epochs=3)
    assert [round(head.margin_at(epoch), 6) for epoch in range(5)] == [0.2, 0.3, 0.4, 0.5, 0.5]
    assert HeadSettings(margin=0.4).margin_at(0) == 0.4


def test_dynamic_margins_shrink_with_class_size_and_follow_the_warmup():
    settings = HeadSettings(margin=0.5, margin_start=0.25, margin_warmup_epochs=2,
                            dynamic_margin=DynamicMargin(a=0.5, power=0.25, b=0.05))
    sizes = np.array([1, 16, 81])
    full = class_margins(settings, sizes, epoch=2)
    np.testing.assert_allclose(full, [0.55, 0.5 / 2 + 0.05, 0.5 / 3 + 0.05], rtol=1e-6)
    np.testing.assert_allclose(class_margins(settings, sizes, epoch=0), full / 2, rtol=1e-6)


def test_head_applies_each_rows_class_margin():
    torch.manual_seed(0)
    head = ArcMarginHead(8, 3, scale=1.0, margin=0.5)
    embeddings, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    constant = head(embeddings, labels)
    head.set_margins(0.5)
    torch.testing.assert_close(head(embeddings, labels), constant)  # one value: the scalar path, unchanged
    margins = torch.tensor([0.1, 0.3, 0.6])
    head.set_margins(margins)
    logits = head(embeddings, labels)
    cosine = head.cosine(embeddings).detach()
    logits = logits.detach()
    for row, label in enumerate(labels.tolist()):
        theta = math.acos(float(cosine[row, label]))
        expected = math.cos(theta + float(margins[label]))
        assert float(logits[row, label]) == pytest.approx(expected, abs=1e-5)
        others = [c for c in range(3) if c != label]
        torch.testing.assert_close(logits[row, others], cosine[row, others])


def test_frozen_backbone_epochs_train_only_the_neck_first():
    config = parse_config(MINIMAL + IMAGE_MODEL + "train = { epochs = 3, freeze_backbone_epochs = 1 }\n",
                          source="t.toml")
    model = config.model("cnn")
    embedder = ImageEmbedder(timm.create_model("test_resnet", num_classes=0), embedding_dim=8, pooling="avg",
                             image_size=32)
    head = ArcMarginHead(8, 2)
    _schedule_epoch(model, embedder, head, np.array([3, 3]), epoch=0)
    assert not any(p.requires_grad for p in embedder.backbone.parameters())
    assert all(p.requires_grad for p in embedder.neck[0].parameters())
    _schedule_epoch(model, embedder, head, np.array([3, 3]), epoch=1)
    assert all(p.requires_grad for p in embedder.backbone.parameters())


def test_augmentation_comes_from_the_config_and_enters_the_fingerprint():
    config = parse_config(MINIMAL + IMAGE_MODEL + 'augment = { hflip = 0.0, rotation = 10.0, crop_scale = [0.8, 1.0] }'
                          '\ntta = ["flip"]\n', source="t.toml")
    model = config.model("cnn")
    assert model.augment == AugmentSettings(hflip=0.0, crop_scale=(0.8, 1.0), color_jitter=0.2, rotation=10.0)
    assert model.tta == ("flip",)
    train, _, data_config = image_transforms(timm.create_model("test_resnet", num_classes=0), 32, model.augment)
    assert train.augment == model.augment and train.image_size == 32
    assert (train.mean, train.std) == (tuple(data_config["mean"]), tuple(data_config["std"]))
    default = parse_config(MINIMAL + IMAGE_MODEL, source="t.toml").model("cnn")
    assert to_plain(model) != to_plain(default)  # the model's settings are its fingerprint's input
    with pytest.raises(ConfigError, match="hflip is a probability"):
        parse_config(MINIMAL + IMAGE_MODEL + "augment = { hflip = 2.0 }\n", source="t.toml")


def test_flip_tta_embeds_an_image_and_its_mirror_alike():
    torch.manual_seed(0)
    backbone = timm.create_model("test_resnet", num_classes=0)
    embedder = ImageEmbedder(backbone, embedding_dim=8, pooling="avg", image_size=32, flip_tta=True).eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        both = embedder(images)
        torch.testing.assert_close(both, embedder(images.flip(-1)))  # invariant to the mirror
        embedder.flip_tta = False
        one, mirrored = embedder(images), embedder(images.flip(-1))
    expected = torch.nn.functional.normalize(one, dim=1) + torch.nn.functional.normalize(mirrored, dim=1)
    torch.testing.assert_close(both, expected)


def test_class_mean_init_puts_each_centre_on_its_rows_mean_direction():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 5
    embeddings = 3 * torch.randn(5, 8, generator=generator)[labels] + torch.randn(40, 8, generator=generator)
    head = ArcMarginHead(8, 5, subcenters=1)
    head.imprint(embeddings, labels, torch.Generator().manual_seed(1))
    means = torch.stack([torch.nn.functional.normalize(embeddings[labels == c], dim=1).mean(0) for c in range(5)])
    assert torch.allclose(head.weight, torch.nn.functional.normalize(means, dim=1), atol=1e-6)
    assert (head.cosine(embeddings).argmax(1) == labels).float().mean() > 0.9  # it already ranks the classes


def test_class_mean_init_jitters_subcentres_apart_and_is_seeded():
    embeddings, labels = torch.randn(30, 16), torch.arange(30) % 3
    first, again = ArcMarginHead(16, 3, subcenters=2), ArcMarginHead(16, 3, subcenters=2)
    first.imprint(embeddings, labels, torch.Generator().manual_seed(4))
    again.imprint(embeddings, labels, torch.Generator().manual_seed(4))
    assert torch.equal(first.weight, again.weight)
    pair = torch.nn.functional.normalize(first.weight[:2], dim=1)
    assert 0.9 < float(pair[0] @ pair[1]) < 1.0


def test_class_mean_init_needs_a_margin_head():
    head = 'head = { type = "arcface", init = "class_means" }\n'
    config = parse_config(MINIMAL + IMAGE_MODEL + head, source="t.toml")
    assert config.model("cnn").head.init == "class_means"
    with pytest.raises(ConfigError, match="init = 'class_means' needs a margin head"):
        parse_config(MINIMAL + IMAGE_MODEL + 'head = { type = "supcon", init = "class_means" }\n', source="t.toml")


def test_neck_statistics_are_fitted_to_the_rows_and_the_backbone_is_left_alone():
    from torch.utils.data import TensorDataset

    from compkit.training.loop import fit_neck_statistics

    torch.manual_seed(0)
    embedder = ImageEmbedder(timm.create_model("test_resnet", num_classes=0), embedding_dim=16, pooling="avg",
                             image_size=32)
    backbone_before = {k: v.clone() for k, v in embedder.backbone.state_dict().items()}
    images = torch.randn(48, 3, 32, 32) * 2 + 1
    fit_neck_statistics(embedder, TensorDataset(images, torch.zeros(48)), torch.device("cpu"), batch_size=48)
    embedder.eval()
    with torch.no_grad():
        before_norm = embedder.neck[0](embedder._pool(embedder.backbone.forward_features(images)))
    norm = embedder.neck[1]
    assert torch.allclose(norm.running_mean, before_norm.mean(0), atol=1e-5)
    assert torch.allclose(norm.running_var, before_norm.var(0), rtol=1e-3)
    assert all(torch.equal(v, backbone_before[k]) for k, v in embedder.backbone.state_dict().items())
    assert embedder.neck[1].momentum == 0.1


def test_batchnorm_statistics_skip_a_last_batch_of_one_row():
    from torch.utils.data import TensorDataset

    from compkit.training.loop import fit_neck_statistics, recalibrate_batchnorm

    torch.manual_seed(0)
    embedder = ImageEmbedder(timm.create_model("test_resnet", num_classes=0), embedding_dim=16, pooling="avg",
                             image_size=32)
    rows = TensorDataset(torch.randn(5, 3, 32, 32), torch.zeros(5))  # batches of 2, 2 and 1
    fit_neck_statistics(embedder, rows, torch.device("cpu"), batch_size=2)
    recalibrate_batchnorm(embedder, rows, torch.device("cpu"), batch_size=2)
    assert torch.isfinite(embedder.neck[1].running_var).all()
