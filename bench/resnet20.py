"""A CIFAR-10 ResNet-20-shaped model and 200 seeded images for the matrix-free benchmark (issue 14).

usage: resnet20.py OUTDIR [--images N] [--seed S] [--dtype float32|float64] [--train-steps K]
                          [--shortcut A|B] [--small]

Writes OUTDIR/resnet20.pt (torch.jit.script, eval mode) and OUTDIR/resnet20_data.pt
(torch.save((x, y)): x [N, 3, 32, 32], y [N] int64 in 0..9), and prints the parameter count.

The model is PyHessian's models/resnet.py at depth 20 (He et al. 2016, section 4.2): a 3x3 conv
(16 channels) + BatchNorm + ReLU, three stages of 3 basic blocks (16, 32, 64 channels; stride 2
at the first block of stages 2 and 3), global 8x8 average pooling, Linear(64, 10). Convolutions
have no bias. Shortcuts where the shape changes:
  B (default, PyHessian's and torchvision's): 1x1 conv with stride 2 + BatchNorm, n = 272,474;
  A (He et al.'s CIFAR option): subsample by 2 and zero-pad the channels, no parameters, n = 269,722.
--small: 8/16/32 channels, 1 block per stage (ResNet-8 shape), 32 images unless --images says.

No data set can be downloaded here, so the images are seeded: each class has a smooth random
pattern (4x4 upsampled to 32x32) and an image is its class's pattern plus Gaussian noise, so the
labels are learnable and a few SGD steps (--train-steps) move the weights off their random init.
The BatchNorm running statistics are then set to the data's statistics by train-mode forwards
without gradients (cumulative average), and the model is exported in eval mode.
Deterministic for a given seed and --threads (default 1: the reduction order of torch's CPU
kernels depends on the thread count).
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class ShortcutA(nn.Module):
    """He et al.'s option A: x[:, :, ::2, ::2], zero-padded from `inplanes` to `planes` channels."""

    def __init__(self, inplanes: int, planes: int):
        super().__init__()
        self.before = (planes - inplanes) // 2
        self.after = planes - inplanes - self.before

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], [0, 0, 0, 0, self.before, self.after])


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride == 1 and inplanes == planes:
            self.downsample = nn.Identity()
        elif shortcut == "A":
            self.downsample = ShortcutA(inplanes, planes)
        else:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class ResNetCifar(nn.Module):
    def __init__(self, blocks_per_stage=3, width=16, num_classes=10, shortcut="B"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers = []
        inplanes = width
        for stage, planes in enumerate([width, 2 * width, 4 * width]):
            for b in range(blocks_per_stage):
                stride = 2 if stage > 0 and b == 0 else 1
                layers.append(BasicBlock(inplanes, planes, stride, shortcut))
                inplanes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(4 * width, num_classes)
        # PyHessian's (and fb.resnet.torch's) initialisation: He-normal convs, BatchNorm 1/0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def make_images(n, num_classes, gen):
    """Class patterns (smooth, 4x4 upsampled) + noise, per-channel normalised like CIFAR inputs."""
    patterns = torch.randn(num_classes, 3, 4, 4, generator=gen)
    patterns = F.interpolate(patterns, size=(32, 32), mode="bilinear", align_corners=False)
    y = torch.randint(0, num_classes, (n,), generator=gen)
    x = patterns[y] + 0.8 * torch.randn(n, 3, 32, 32, generator=gen)
    x = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / x.std(dim=(0, 2, 3), keepdim=True)
    return x, y


def train(model, x, y, steps, lr, batch, gen):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randperm(x.shape[0], generator=gen)[:batch]
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def warm_batchnorm(model, x, chunks):
    """Running mean/var := the cumulative average of the batch statistics over `chunks` slices of x."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    for part in x.chunk(chunks):
        model(part)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--images", type=int, default=None, help="default 200 (32 with --small)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                    help="dtype of the exported parameters, buffers and images")
    ap.add_argument("--train-steps", type=int, default=30, help="SGD steps (momentum 0.9) on the images")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=64, help="SGD mini-batch")
    ap.add_argument("--shortcut", choices=["A", "B"], default="B")
    ap.add_argument("--small", action="store_true", help="8/16/32 channels, 1 block per stage")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prefix", default="resnet20", help="file names: PREFIX.pt, PREFIX_data.pt")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    images = a.images if a.images is not None else (32 if a.small else 200)
    gen = torch.Generator().manual_seed(a.seed)
    torch.manual_seed(a.seed)  # the parameter init
    t0 = time.time()
    model = ResNetCifar(blocks_per_stage=1 if a.small else 3, width=8 if a.small else 16,
                        shortcut=a.shortcut)
    x, y = make_images(images, 10, gen)
    losses = train(model, x, y, a.train_steps, a.lr, min(a.batch, images), gen)
    warm_batchnorm(model, x, chunks=max(1, images // 50))
    dtype = getattr(torch, a.dtype)
    model = model.to(dtype).eval()
    x = x.to(dtype)
    with torch.no_grad():
        logits = model(x)
        eval_loss = F.cross_entropy(logits, y).item()
        accuracy = (logits.argmax(1) == y).double().mean().item()

    os.makedirs(a.outdir, exist_ok=True)
    model_path = os.path.join(a.outdir, a.prefix + ".pt")
    data_path = os.path.join(a.outdir, a.prefix + "_data.pt")
    torch.jit.script(model).save(model_path)
    torch.save((x, y), data_path)

    n = sum(p.numel() for p in model.parameters())
    info = {
        "model": model_path, "data": data_path, "n": n,
        "shape": ("ResNet-8-shaped, 8/16/32 channels" if a.small else "ResNet-20, 16/32/64 channels"),
        "shortcut": a.shortcut, "images": images, "seed": a.seed, "dtype": a.dtype,
        "train_steps": a.train_steps, "train_loss_first_last": [losses[0], losses[-1]] if losses else None,
        "eval_loss": eval_loss, "eval_accuracy": accuracy, "seconds": round(time.time() - t0, 2),
        "torch": torch.__version__,
    }
    with open(os.path.join(a.outdir, a.prefix + "_info.json"), "w") as f:
        json.dump(info, f, indent=1)
    print("resnet20.py: n = {:,} parameters ({}, option-{} shortcuts), {} images; eval loss {:.4f}, "
          "accuracy {:.3f}; wrote {} and {}".format(n, info["shape"], a.shortcut, images, eval_loss, accuracy,
                                                   model_path, data_path))


if __name__ == "__main__":
    main()
