"""Benchmark: images/s of compkit's training, data loading included, against a bare timm training loop.

    .venv/bin/python benchmarks/train_throughput.py                      # lcnet_050 @ 64px, batch 64, 2 threads
    .venv/bin/python benchmarks/train_throughput.py --backbone tf_efficientnet_lite0 --workers 1
    .venv/bin/python benchmarks/train_throughput.py --device cuda --amp bf16 --image-size 384 --workers 8

compkit's side is the code `train_model_fold` runs, from image files on disk: the config's input pipeline
(`build_embedder(...).inputs`: decoded-image cache, compkit.models.augment's batched augmentation with the
backbone's mean, std and interpolation),
`EpochLoader` (one DataLoader for the run, persistent workers, per-row augmentation seeds) and
`TrainingStep.run_epoch` (embedder + ArcFace head + cross-entropy, AdamW, LR schedule). `--data tensors`
feeds it pre-loaded tensors instead, isolating the step. The reference is the textbook loop with no data
loading at all: `timm.create_model(backbone, num_classes=C)`, cross-entropy, AdamW, over pre-loaded tensors
on the device. So the ratio is what decoding, augmentation and compkit's step cost beyond the model itself.
The images are seeded random JPEGs at twice the training size, written to a temporary folder. Both sides
run on the same threads and take turns (A B A B ...), each keeping its fastest pass.
"""

from __future__ import annotations

import argparse
import time


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="lcnet_050")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--embedding-dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=300)
    parser.add_argument("--batches", type=int, default=20, help="batches per timed pass")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per side (fastest kept)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sampler", choices=("random", "class_balanced"), default="class_balanced")
    parser.add_argument("--data", choices=("files", "tensors"), default="files",
                        help="compkit reads JPEG files (decode + augmentation) or pre-loaded tensors")
    parser.add_argument("--workers", type=int, default=0, help="compkit's DataLoader workers (train.num_workers)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off")
    return parser.parse_args()


def _preloaded(args):
    """Return (images, labels): seeded random tensors standing in for a decoded, augmented training set."""
    import torch

    generator = torch.Generator().manual_seed(0)
    n_rows = args.batch_size * args.batches
    images = torch.randn(n_rows, 3, args.image_size, args.image_size, generator=generator)
    labels = torch.arange(n_rows) % args.classes
    return images, labels[torch.randperm(n_rows, generator=generator)]


def _image_files(args, folder) -> list[str]:
    """Write seeded random JPEGs at twice the training size; return their names."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    names = []
    for index in range(args.batch_size * args.batches):
        pixels = rng.integers(0, 256, (2 * args.image_size, 2 * args.image_size, 3), dtype=np.uint8)
        names.append(f"{index}.jpg")
        Image.fromarray(pixels).save(folder / names[-1], quality=90)
    return names


class _SeededTensors:
    """Pre-loaded (image, label) rows read by EpochLoader's (augmentation seed, position) keys."""

    def __init__(self, images, labels) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        position = key[1] if isinstance(key, tuple) else key
        return self.images[position], self.labels[position]


def _compkit_pass(args, images, labels, folder):
    """Return a callable that trains one pass with compkit's input pipeline, EpochLoader and TrainingStep."""
    import pandas as pd
    import torch

    from compkit.config import Columns, HeadSettings, ImageModel, TrainSettings
    from compkit.models.factory import build_embedder
    from compkit.models.heads import create_head
    from compkit.training.device import autocast_dtype
    from compkit.training.steps import EpochLoader, batches_per_epoch, create_training_step

    device = torch.device(args.device)
    settings = TrainSettings(epochs=1000, batch_size=args.batch_size, sampler=args.sampler, amp=args.amp,
                             num_workers=args.workers)
    model = ImageModel(
        name="bench", kind="image", backbone=args.backbone, image_size=args.image_size,
        embedding_dim=args.embedding_dim, head=HeadSettings(scale=16.0, margin=0.2), train=settings,
    )
    build = build_embedder(model, Columns(id="id", label="label", image="image"))
    embedder = build.embedder.to(device)
    head = create_head(model.head, model.embedding_dim, args.classes).to(device)
    label_array = labels.numpy()
    if args.data == "files":
        frame = pd.DataFrame({"image": _image_files(args, folder)})
        dataset = build.inputs(frame, folder).dataset(torch.arange(len(frame)).numpy(), label_array, train=True)
    else:
        dataset = _SeededTensors(images, labels)
    dtype = autocast_dtype(args.amp, device)
    trainer = create_training_step(embedder, head, settings, device, amp_dtype=dtype,
                                   steps_per_epoch=batches_per_epoch(len(dataset), settings))
    loader = EpochLoader(dataset, label_array, settings, seed=0, device=device)

    def one_pass(epoch: int) -> int:
        seen = len(trainer.run_epoch(loader.epoch(epoch + 1))) * args.batch_size
        if device.type == "cuda":
            torch.cuda.synchronize()
        return seen

    return one_pass


def _timm_pass(args, images, labels):
    """Return a callable that trains one pass of the bare timm + cross-entropy + AdamW loop."""
    import timm
    import torch
    import torch.nn.functional as F

    device = torch.device(args.device)
    model = timm.create_model(args.backbone, pretrained=False, num_classes=args.classes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    images, labels = images.to(device), labels.to(device)
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def one_pass(epoch: int) -> int:
        model.train()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(epoch)).to(device)
        seen = 0
        for start in range(0, len(images) - args.batch_size + 1, args.batch_size):
            rows = order[start:start + args.batch_size]
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(images[rows]), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            seen += len(rows)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return seen

    return one_pass


def main() -> None:
    args = _arguments()
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import tempfile
    from pathlib import Path

    images, labels = _preloaded(args)
    folder = Path(tempfile.mkdtemp(prefix="compkit-throughput-"))
    sides = {"timm reference": _timm_pass(args, images, labels),
             "compkit": _compkit_pass(args, images, labels, folder)}
    for run in sides.values():
        run(-1)  # warm-up: allocator, oneDNN kernels
    best = {name: (0.0, 0.0) for name in sides}
    for attempt in range(args.repeat):
        for name, run in sides.items():
            wall, cpu = time.perf_counter(), time.process_time()
            seen = run(attempt)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = max(best[name][0], seen / wall), max(best[name][1], seen / cpu)
    print(f"{args.backbone} @ {args.image_size}px, batch {args.batch_size}, {args.threads} threads, {args.device}, "
          f"AMP {args.amp}, sampler {args.sampler}, compkit from {args.data} with {args.workers} workers, "
          f"{args.batches} batches x {args.repeat} passes (fastest kept)")
    for name, (per_second, per_cpu_second) in best.items():
        print(f"  {name:<15} {per_second:8.1f} images/s   {per_cpu_second:8.1f} images per CPU-second")
    wall_ratio = best["compkit"][0] / best["timm reference"][0]
    cpu_ratio = best["compkit"][1] / best["timm reference"][1]
    print(f"  compkit / reference: {wall_ratio:.2f}x wall, {cpu_ratio:.2f}x CPU of this process "
          "(workers' CPU not counted) (target >= 0.90x wall)")
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
