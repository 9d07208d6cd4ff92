"""The files `deploy init` writes: a starter inventory, playbook, Dockerfile and train.py (pure)."""
from __future__ import annotations

PYTORCH_IMAGE = "nvcr.io/nvidia/pytorch:25.05-py3"

INVENTORY = """\
# Your GPU servers, in Ansible's YAML inventory format (ansible-inventory reads it too).
#   deploy inventory list                 # what deployer sees
#   deploy inventory check --host gpus    # SSH, Docker, GPUs, disk on each host
all:
  vars:
    ansible_user: ubuntu                  # SSH user (key-based login)
    # ansible_ssh_private_key_file: ~/.ssh/id_ed25519
    data_root: /data                      # datasets live here on each server (see playbooks/train.yml)
    # deploy_registry: registry.example.com:5000  # hosts that reach a registry pull from it
    # deploy_staging_dir: /var/tmp/deployer       # where image layers are staged on the server
    # deploy_docker: sudo docker                  # when the SSH user is not in the docker group
  children:
    gpus:
      hosts:
        gpu01:
          ansible_host: 192.0.2.11        # replace with your server's address
        gpu02:
          ansible_host: 192.0.2.12
          data_root: /mnt/nvme/data       # a host keeps its data elsewhere: override per host
"""

PLAYBOOK = """\
# What to build, where to send it and how to run it.
#   deploy build                          # build the image locally, tagged with the git revision
#   deploy ship --host gpu01              # build, ship (only missing layers) and start on gpu01
#   deploy logs train --host gpu01 -f     # follow its output
#   deploy status --host gpus             # what runs where
name: train
hosts: gpus                               # default host pattern; --host overrides it

image:
  build:
    context: ..                           # the project folder (relative to this file)
    dockerfile: Dockerfile

ship:
  via: auto                               # registry if the host reaches one, else a tarball over SSH

run:
  gpus: all                               # as `docker run --gpus`: all, 2, '"device=0,1"'
  ipc: host                               # PyTorch DataLoader workers need shared memory
  volumes:
    - "{{ data_root }}:/workspace/data"   # data_root comes from the inventory, per host
  env:
    EPOCHS: "{{ epochs }}"
  replace: true                           # shipping again replaces the previous `train` container
  command: python train.py --data /workspace/data

vars:                                     # defaults; inventory vars override them per host
  epochs: 5
"""

DOCKERFILE = f"""\
# NVIDIA's PyTorch container: CUDA, cuDNN, NCCL, PyTorch and torchvision.
FROM {PYTORCH_IMAGE}

WORKDIR /workspace
# Dependencies before code: editing train.py then re-ships only the small last layer.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY train.py .

CMD ["python", "train.py", "--data", "/workspace/data"]
"""

REQUIREMENTS = """\
# Extra packages for train.py (torch and torchvision come with the base image).
"""

DOCKERIGNORE = """\
.git
__pycache__/
*.pyc
data/
checkpoints/
*.env
inventories/
"""

TRAIN = '''\
"""Fine-tune a pretrained ResNet-18 on an image folder (DATA/train/<class>/*.jpg) on one GPU."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="/workspace/data")
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("EPOCHS", "5")))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {device} ({torch.cuda.get_device_name(0) if device.type == 'cuda' else 'no GPU'})", flush=True)
    tf = transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    train_dir = Path(args.data) / "train"
    if train_dir.is_dir():
        data = datasets.ImageFolder(train_dir, tf)
    else:
        print(f"{train_dir} not found: training on random images to check the setup", flush=True)
        data = datasets.FakeData(size=512, num_classes=10, transform=tf)
    classes = len(getattr(data, "classes", range(10)))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, num_workers=4, pin_memory=True)

    model = models.resnet18(weights=models.ResNet18_Weights.DEFAULT)
    model.fc = nn.Linear(model.fc.in_features, classes)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        model.train()
        total, correct, loss_sum = 0, 0, 0.0
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(images)
                loss = loss_fn(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * labels.numel()
            correct += (logits.argmax(1) == labels).sum().item()
            total += labels.numel()
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss_sum / total:.4f} acc {correct / total:.3f}", flush=True)
    out = Path(args.data) / "checkpoints"
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "resnet18-finetuned.pt")
    print(f"saved {out / 'resnet18-finetuned.pt'}", flush=True)


if __name__ == "__main__":
    main()
'''


def files() -> dict[str, str]:
    """Relative path -> contents of every file `deploy init` writes."""
    return {
        "inventories/hosts.yml": INVENTORY,
        "playbooks/train.yml": PLAYBOOK,
        "Dockerfile": DOCKERFILE,
        "requirements.txt": REQUIREMENTS,
        ".dockerignore": DOCKERIGNORE,
        "train.py": TRAIN,
    }
