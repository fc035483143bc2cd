#!/usr/bin/env python3
"""Writes the models, data and independent oracles the dhess tests compare with.

For every case: CASE.pt (TorchScript), CASE_data.pt (torch.save), and the
oracle CASE_H.npy: the Hessian from torch.autograd.functional.hessian on the
*eager* Python model, its blocks stitched into one matrix in named_parameters()
order, and CASE_eig.npy from numpy.linalg.eigvalsh. Closed forms are written as
CASE_closed_form.npy. Nothing here uses dhess.

Usage: .venv/bin/python make_cases.py OUTDIR
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.stateless import functional_call

torch.manual_seed(1234)
torch.set_default_dtype(torch.float64)
OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
LOSSES = {
    "cross_entropy": F.cross_entropy,
    "mse": F.mse_loss,
    "nll": F.nll_loss,
    "bce_with_logits": F.binary_cross_entropy_with_logits,
}


def stitched_hessian(model, loss_fn, inputs, targets, regex=None):
    """H of loss_fn(model(*inputs), targets) w.r.t. all (or regex-selected) parameters."""
    import re
    named = [(n, p.detach().clone()) for n, p in model.named_parameters()]
    fixed = {n: p for n, p in named}
    names = [n for n, _ in named if regex is None or re.search(regex, n)]
    params = tuple(fixed[n] for n in names)

    def f(*ps):
        state = dict(fixed)
        state.update(zip(names, ps))
        out = functional_call(model, state, tuple(inputs))
        return out if loss_fn is None else loss_fn(out, targets)

    blocks = torch.autograd.functional.hessian(f, params)
    sizes = [p.numel() for p in params]
    rows = [np.concatenate([blocks[i][j].reshape(sizes[i], sizes[j]).numpy() for j in range(len(params))], axis=1)
            for i in range(len(params))]
    return np.concatenate(rows, axis=0), names


def save_case(name, model, inputs, targets, loss, data_format="tuple", scripted=None, regex=None):
    model = model.double().eval()
    (scripted or torch.jit.script(model)).save(os.path.join(OUT, name + ".pt"))
    if targets is not None:
        inp = inputs[0] if len(inputs) == 1 else tuple(inputs)
        blob = {"inputs": inp, "targets": targets} if data_format == "dict" else (inp, targets)
        torch.save(blob, os.path.join(OUT, name + "_data.pt"))
    H, names = stitched_hessian(model, LOSSES.get(loss), inputs, targets, regex)
    np.save(os.path.join(OUT, name + "_H.npy"), H)
    np.save(os.path.join(OUT, name + "_eig.npy"), np.linalg.eigvalsh((H + H.T) / 2))
    return H, names


class ConvNet(nn.Module):
    """The network users ask about most, at a test size."""

    def __init__(self, hw, channels=4, classes=3):
        super().__init__()
        self.c1 = nn.Conv2d(1, channels, 3, 1, 1)
        self.f2 = nn.Linear(channels * hw * hw, classes)

    def forward(self, x):
        return self.f2(torch.flatten(self.c1(x), 1))


class Mlp(nn.Module):
    def __init__(self, unused=False):
        super().__init__()
        self.l1 = nn.Linear(3, 6)
        self.l2 = nn.Linear(6, 4)
        if unused:
            self.spare = nn.Linear(2, 2)  # never called in forward: zero rows/columns of H

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x)))


class Scalar(nn.Module):
    """Parameters x, y; forward returns (2xy^2 + x^3 - 10).sum(): H = [[6x, 4y], [4y, 4x]]."""

    def __init__(self):
        super().__init__()
        self.x = nn.Parameter(torch.tensor([2.0]))
        self.y = nn.Parameter(torch.tensor([-3.0]))

    def forward(self):
        return (2 * self.x * self.y ** 2 + self.x ** 3 - 10).sum()


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 3)
        self.b = nn.Linear(4, 3)

    def forward(self, u, v):
        return torch.sigmoid(self.a(u)) * self.b(v)


class LogSoftmaxNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(5, 4)

    def forward(self, x):
        return torch.log_softmax(torch.tanh(self.l(x)) * 2, dim=1)


manifest = {}
# Convolution + linear, cross-entropy: 4*9+4 + 3*4*25+3 = 343 parameters.
x = torch.randn(6, 1, 5, 5)
y = torch.randint(0, 3, (6,))
H, names = save_case("convnet", ConvNet(5), [x], y, "cross_entropy")
manifest["convnet"] = {"n": H.shape[0], "loss": "cross_entropy"}
# Sub-Hessian of the last layer only.
model = ConvNet(5).double()
model.load_state_dict(torch.jit.load(os.path.join(OUT, "convnet.pt")).state_dict())
Hs, _ = stitched_hessian(model.eval(), F.cross_entropy, [x], y, regex=r"^f2\.")
np.save(os.path.join(OUT, "convnet_f2_H.npy"), Hs)

# MLP with MSE, data as a dict, and a parameter the loss never uses.
x = torch.randn(20, 3)
y = torch.randn(20, 4)
H, _ = save_case("mlp_unused", Mlp(unused=True), [x], y, "mse", data_format="dict")
manifest["mlp_unused"] = {"n": H.shape[0], "loss": "mse"}

# A traced model (torch.jit.trace), NLL loss on log-probabilities.
net = LogSoftmaxNet().double().eval()
x = torch.randn(12, 5)
y = torch.randint(0, 4, (12,))
H, _ = save_case("traced_nll", net, [x], y, "nll", scripted=torch.jit.trace(net, (x,)))
manifest["traced_nll"] = {"n": H.shape[0], "loss": "nll"}

# Two input tensors, BCE with logits.
u, v = torch.randn(10, 2), torch.randn(10, 4)
y = (torch.rand(10, 3) > 0.5).double()
H, _ = save_case("two_inputs", TwoInputs(), [u, v], y, "bce_with_logits")
manifest["two_inputs"] = {"n": H.shape[0], "loss": "bce_with_logits"}

# Scalar function of two parameters, --loss none without data: closed form at x=2, y=-3.
scalar = Scalar()
torch.jit.script(scalar).save(os.path.join(OUT, "scalar.pt"))
np.save(os.path.join(OUT, "scalar_closed_form.npy"), np.array([[12.0, -12.0], [-12.0, 8.0]]))
manifest["scalar"] = {"n": 2, "loss": "none"}

# Linear least squares: mean squared error of W x + b; H = 2/(N*o) * kron(I_o, X~^T X~) in
# (W row-major, then b) order, with X~ = [X, 1]. Closed form from numpy alone.
N, d, o = 30, 4, 2
lin = nn.Linear(d, o).double()
X = torch.randn(N, d)
Y = torch.randn(N, o)
torch.jit.script(lin).save(os.path.join(OUT, "linear.pt"))
torch.save((X, Y), os.path.join(OUT, "linear_data.pt"))
Xn = X.numpy()
G = 2.0 / (N * o)
n = o * d + o
H = np.zeros((n, n))
for i in range(o):
    w = slice(i * d, (i + 1) * d)
    H[w, w] = G * Xn.T @ Xn
    H[w, o * d + i] = G * Xn.sum(axis=0)
    H[o * d + i, w] = G * Xn.sum(axis=0)
    H[o * d + i, o * d + i] = G * N
np.save(os.path.join(OUT, "linear_closed_form.npy"), H)
manifest["linear"] = {"n": n, "loss": "mse"}

# Softmax regression on 4 samples: n = 255*10 + 10 = 2560, rank at most 4 * (10 - 1) = 36, so
# --solver auto's rank-revealing sketch (up to n / 16 = 160 vectors) answers.
x = torch.randn(4, 255)
y = torch.randint(0, 10, (4,))
H, _ = save_case("wide_softmax", nn.Linear(255, 10), [x], y, "cross_entropy")
manifest["wide_softmax"] = {"n": H.shape[0], "loss": "cross_entropy"}

with open(os.path.join(OUT, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2)
print("oracle cases written to", OUT)
