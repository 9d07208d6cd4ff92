"""Fine-tune a pretrained ResNet-50 on an ImageFolder dataset, on every GPU of the host (torchrun)."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from torchvision import datasets, models, transforms


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default="/workspace/data", help="folder with train/ and val/ ImageFolder splits")
    p.add_argument("--out", default="/workspace/checkpoints", help="where checkpoints are written")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128, help="per GPU")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--workers", type=int, default=8)
    return p.parse_args()


def loaders(root: Path, batch_size: int, workers: int, distributed: bool) -> tuple[DataLoader, DataLoader, int]:
    norm = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train = datasets.ImageFolder(root / "train", transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm]))
    val = datasets.ImageFolder(root / "val", transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), norm]))
    sampler = DistributedSampler(train) if distributed else None
    train_dl = DataLoader(train, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                          num_workers=workers, pin_memory=True, persistent_workers=workers > 0)
    val_dl = DataLoader(val, batch_size=batch_size, num_workers=workers, pin_memory=True)
    return train_dl, val_dl, len(train.classes)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            correct += (model(images).argmax(1) == labels).sum().item()
        total += labels.numel()
    return correct / max(total, 1)


def main() -> None:
    args = parse_args()
    distributed = "LOCAL_RANK" in os.environ
    if distributed:
        dist.init_process_group("nccl")
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
    else:
        local_rank = 0
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    is_main = not distributed or dist.get_rank() == 0
    torch.backends.cudnn.benchmark = True

    train_dl, val_dl, classes = loaders(Path(args.data), args.batch_size, args.workers, distributed)
    model = models.resnet50(weights=models.ResNet50_Weights.IMAGENET1K_V2)
    model.fc = nn.Linear(model.fc.in_features, classes)
    model = model.to(device, memory_format=torch.channels_last)
    if distributed:
        model = DistributedDataParallel(model, device_ids=[local_rank])
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * len(train_dl))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    for epoch in range(args.epochs):
        if distributed:
            train_dl.sampler.set_epoch(epoch)  # type: ignore[union-attr]
        model.train()
        started, seen, running = time.time(), 0, 0.0
        for images, labels in train_dl:
            images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = loss_fn(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += labels.numel()
            running += loss.item() * labels.numel()
        if is_main:
            acc = evaluate(model, val_dl, device)
            rate = seen / (time.time() - started)
            print(f"epoch {epoch + 1}/{args.epochs} loss {running / max(seen, 1):.4f} "
                  f"val_acc {acc:.4f} {rate:.0f} img/s per GPU", flush=True)
            state = (model.module if distributed else model).state_dict()
            torch.save({"epoch": epoch + 1, "model": state, "val_acc": acc}, out / "last.pt")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
