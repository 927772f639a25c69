#!/usr/bin/env python3
"""PyTorch's side of sambench's checkpoint interoperability tests (docs/FINETUNE.md).

Needs torch (the CPU wheel: pip install "torch==2.13.0+cpu"), numpy and safetensors. It does
not import torchvision (the wheel reachable here is a CUDA build that does not load beside the
CPU torch): `TorchvisionResNet` below has torchvision.models.resnet's module names, shapes and
initialisation, so its state_dict is interchangeable with torchvision's.

Commands (each prints one `RESULT {json}` line last):
  cifar-resnet20 --data DIR --out FILE   train a CIFAR ResNet-20 (sambench's names) for one epoch
                                         (or its first --steps N batches)
                                         on the CIFAR-10 binary layout in DIR, save the state dict,
                                         and count the correct test images in eval mode
  torchvision --arch resnet18 --stem imagenet|cifar --weights FILE --aux FILE
                                         a seeded torchvision ResNet (BN statistics from two
                                         training-mode passes), its state dict, and in FILE aux
                                         an input batch with its eval logits
  load --arch ... --stem ... --weights FILE --aux FILE
                                         load a state dict (sambench's) with strict=True and
                                         print the eval logits of the aux file's input
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


# --- sambench's CIFAR ResNet (He et al. 2016, option-B shortcuts), sambench's module names ---

class CifarBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        o = F.relu(self.bn1(self.conv1(x)))
        o = self.bn2(self.conv2(o))
        return F.relu(o + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth=20, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for stage, width in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(CifarBlock(cin, width, 2 if stage > 0 and j == 0 else 1))
                cin = width
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- torchvision.models.resnet's structure (v1.5), written out: same names, shapes, init ---

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, 1, 0, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


ARCHS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
         "resnet50": (Bottleneck, [3, 4, 6, 3])}


class TorchvisionResNet(nn.Module):
    def __init__(self, arch, num_classes=1000, stem="imagenet"):
        super().__init__()
        block, layers = ARCHS[arch]
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        if stem == "cifar":  # the usual CIFAR adaptation: 3x3/1 first conv, no max-pool
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, 0, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, None) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --- commands ---

def read_cifar10(root):
    """The official binary layout: records of 1 label byte and 3072 CHW pixel bytes."""
    base = os.path.join(root, "cifar-10-batches-bin")

    def read(names):
        raw = np.concatenate([np.fromfile(os.path.join(base, n), dtype=np.uint8) for n in names]).reshape(-1, 3073)
        return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)

    return read([f"data_batch_{i}.bin" for i in range(1, 6)]), read(["test_batch.bin"])


def normalise(pixels):
    x = torch.from_numpy(pixels).float().div_(255)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def cifar_resnet20(args):
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    (train_x, train_y), (test_x, test_y) = read_cifar10(args.data)
    model = CifarResNet(20)
    batch = 128
    steps = len(train_y) // batch
    if args.steps:
        # A shorter epoch (the interoperability test's): trained weights and BN statistics are
        # what it needs, not accuracy.
        steps = min(steps, args.steps)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps * args.epochs)
    model.train()
    for _ in range(args.epochs):
        order = rng.permutation(len(train_y))
        for s in range(steps):
            idx = order[s * batch:(s + 1) * batch]
            # Standard augmentation: 4-pixel zero-padded random crop and horizontal flip.
            padded = np.pad(train_x[idx], ((0, 0), (0, 0), (4, 4), (4, 4)))
            dx, dy = rng.integers(0, 9, size=2)
            imgs = padded[:, :, dy:dy + 32, dx:dx + 32]
            if rng.random() < 0.5:
                imgs = imgs[:, :, :, ::-1]
            x = normalise(np.ascontiguousarray(imgs))
            loss = F.cross_entropy(model(x), torch.from_numpy(train_y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(test_y), 500):
            pred = model(normalise(test_x[s:s + 500])).argmax(1)
            correct += int((pred == torch.from_numpy(test_y[s:s + 500])).sum())
    save_file(model.state_dict(), args.out)
    print("RESULT " + json.dumps({"correct": correct, "total": int(len(test_y)), "out": args.out}))


def torchvision_logits(args):
    torch.manual_seed(args.seed)
    model = TorchvisionResNet(args.arch, args.classes, args.stem)
    # Non-trivial running statistics: two training-mode passes over random images.
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, args.size, args.size) * 1.5 + 0.2)
    model.eval()
    x = torch.randn(4, 3, args.size, args.size)
    with torch.no_grad():
        logits = model(x)
    save_file(model.state_dict(), args.weights)
    save_file({"input": x.contiguous(), "logits": logits.contiguous()}, args.aux)
    print("RESULT " + json.dumps({"weights": args.weights, "tensors": len(model.state_dict())}))


def load_sambench(args):
    model = TorchvisionResNet(args.arch, args.classes, args.stem)
    model.load_state_dict(load_file(args.weights), strict=True)
    model.eval()
    with torch.no_grad():
        logits = model(load_file(args.aux)["input"])
    print("RESULT " + json.dumps({"logits": logits.flatten().tolist()}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cifar-resnet20")
    c.add_argument("--data", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--epochs", type=int, default=1)
    c.add_argument("--steps", type=int, default=0, help="steps per epoch (default: the whole training set)")
    c.add_argument("--seed", type=int, default=0)
    for name in ("torchvision", "load"):
        t = sub.add_parser(name)
        t.add_argument("--arch", choices=sorted(ARCHS), required=True)
        t.add_argument("--stem", choices=["imagenet", "cifar"], default="imagenet")
        t.add_argument("--classes", type=int, default=10)
        t.add_argument("--weights", required=True)
        t.add_argument("--aux", required=True)
        t.add_argument("--seed", type=int, default=0)
        t.add_argument("--size", type=int, default=32)
    p.add_argument("--threads", type=int, default=int(os.environ.get("SAMBENCH_TORCH_THREADS", "0")) or None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    {"cifar-resnet20": cifar_resnet20, "torchvision": torchvision_logits, "load": load_sambench}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
