"""Benchmark: images/s of compkit's training step against a bare timm training loop, in one process.

    .venv/bin/python benchmarks/train_throughput.py                      # lcnet_050 @ 64px, batch 64, 2 threads
    .venv/bin/python benchmarks/train_throughput.py --backbone mobilenetv3_small_050 --image-size 48

compkit's side is the code `train_model_fold` runs: `train_loader` (a DataLoader with the config's sampler),
then `TrainingStep.run_epoch` (embedder + margin head + cross-entropy, AdamW step, LR scheduler step, EMA when
configured), built by `create_training_step` from a TrainSettings. The reference is the textbook loop:
`timm.create_model(backbone, num_classes=C)`, cross-entropy, AdamW, over a shuffled DataLoader. Both read the
same pre-loaded image tensors, so image decoding and augmentation are out of the comparison: it isolates the
step. Both run on the same threads and take turns (A B A B ...), each keeping its fastest pass; CPU seconds
of the process are printed beside wall time, the steadier measure where other work shares the cores.
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
    return parser.parse_args()


def _preloaded(args):
    """Return (images, labels): seeded random tensors standing in for a decoded, augmented training set."""
    import torch

    generator = torch.Generator().manual_seed(0)
    n_rows = args.batch_size * args.batches
    images = torch.randn(n_rows, 3, args.image_size, args.image_size, generator=generator)
    labels = torch.arange(n_rows) % args.classes
    return images, labels[torch.randperm(n_rows, generator=generator)]


def _compkit_pass(args, images, labels):
    """Return a callable that trains one pass with compkit's loader and TrainingStep."""
    import torch
    from torch.utils.data import TensorDataset

    from compkit.config import Columns, HeadSettings, ImageModel, TrainSettings
    from compkit.models.factory import build_embedder
    from compkit.models.heads import create_head
    from compkit.training.steps import batches_per_epoch, create_training_step, train_loader

    settings = TrainSettings(epochs=1000, batch_size=args.batch_size, sampler=args.sampler, amp="off")
    model = ImageModel(
        name="bench", kind="image", backbone=args.backbone, image_size=args.image_size,
        embedding_dim=args.embedding_dim, head=HeadSettings(scale=16.0, margin=0.2), train=settings,
    )
    embedder = build_embedder(model, Columns(id="id", label="label", image="image")).embedder
    head = create_head(model.head, model.embedding_dim, args.classes)
    dataset = TensorDataset(images, labels)
    trainer = create_training_step(
        embedder, head, settings, torch.device("cpu"), steps_per_epoch=batches_per_epoch(len(dataset), settings)
    )
    label_array = labels.numpy()

    def one_pass(epoch: int) -> int:
        loader = train_loader(dataset, label_array, settings, torch.Generator().manual_seed(epoch), pin_memory=False)
        return len(trainer.run_epoch(loader)) * args.batch_size

    return one_pass


def _timm_pass(args, images, labels):
    """Return a callable that trains one pass of the bare timm + cross-entropy + AdamW loop."""
    import timm
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    model = timm.create_model(args.backbone, pretrained=False, num_classes=args.classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    dataset = TensorDataset(images, labels)

    def one_pass(epoch: int) -> int:
        model.train()
        loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(epoch))
        seen = 0
        for batch, target in loader:
            loss = F.cross_entropy(model(batch), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(batch)
        return seen

    return one_pass


def main() -> None:
    args = _arguments()
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images, labels = _preloaded(args)
    sides = {"timm reference": _timm_pass(args, images, labels), "compkit": _compkit_pass(args, images, labels)}
    for run in sides.values():
        run(-1)  # warm-up: allocator, oneDNN kernels
    best = {name: (0.0, 0.0) for name in sides}
    for attempt in range(args.repeat):
        for name, run in sides.items():
            wall, cpu = time.perf_counter(), time.process_time()
            seen = run(attempt)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = max(best[name][0], seen / wall), max(best[name][1], seen / cpu)
    print(f"{args.backbone} @ {args.image_size}px, batch {args.batch_size}, {args.threads} threads, "
          f"sampler {args.sampler}, {args.batches} batches x {args.repeat} passes (fastest kept)")
    for name, (per_second, per_cpu_second) in best.items():
        print(f"  {name:<15} {per_second:8.1f} images/s   {per_cpu_second:8.1f} images per CPU-second")
    wall_ratio = best["compkit"][0] / best["timm reference"][0]
    cpu_ratio = best["compkit"][1] / best["timm reference"][1]
    print(f"  compkit / reference: {wall_ratio:.2f}x wall, {cpu_ratio:.2f}x CPU (target >= 0.90x)")


if __name__ == "__main__":
    main()
