#!/usr/bin/env python3
"""Writes the Gauss-Newton and empirical Fisher oracles (issue 23) for models of every loss dhess
computes: CASE.pt, CASE_data.pt, and

  CASE_ggn.npy   J^T H_L J, built explicitly with torch.func: J = jacrev of the flattened model
                 outputs in the flattened parameters, H_L = hessian of the mean loss in the outputs;
  CASE_ef.npy    scale * G^T G, G = jacrev of the loss's unreduced terms (a term per target counted
                 by cross_entropy/nll, per row of the last dimension for mse/bce_with_logits), scale
                 the factor by which the mean loss sums them;
  CASE_H.npy     the Hessian, torch.func.hessian of the mean loss in the flattened parameters.

Each is checked against curvlinops-for-pytorch's GGNLinearOperator / EFLinearOperator, applied to
the identity, where curvlinops defines the same matrix (its empirical Fisher averages over every
row, counting -100 padding too, and takes no NLLLoss: there only torch.func is the oracle). The script fails if the two
disagree by more than 1e-12 of max|.|. Nothing here uses dhess.

Usage: .venv/bin/python make_curvature.py OUTDIR
"""
import json
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from curvlinops import EFLinearOperator, GGNLinearOperator
from torch.func import functional_call, hessian, jacrev

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_default_dtype(torch.float64)
OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
LOSSES = {"cross_entropy": nn.CrossEntropyLoss(), "mse": nn.MSELoss(), "nll": nn.NLLLoss(),
          "bce_with_logits": nn.BCEWithLogitsLoss()}
cases = {}


def flat_function(model, inputs):
    """theta (flat, named_parameters order) -> model outputs, and theta's current value."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def unflatten(t):
        parts, at = {}, 0
        for name, shape in zip(names, shapes):
            size = int(np.prod(shape))
            parts[name] = t[at:at + size].reshape(shape)
            at += size
        return parts

    return (lambda t: functional_call(model, unflatten(t), tuple(inputs))), theta


def terms_and_scale(loss, out, y):
    """The unreduced terms of the mean loss and the factor by which it sums them."""
    if loss in ("cross_entropy", "nll"):
        fn = F.cross_entropy if loss == "cross_entropy" else F.nll_loss
        terms = fn(out, y, reduction="none").reshape(-1)
        return terms, 1.0 / int((y != -100).sum())
    elementwise = (out - y) ** 2 if loss == "mse" else F.binary_cross_entropy_with_logits(out, y, reduction="none")
    return (elementwise.sum(-1) if out.dim() > 1 else elementwise).reshape(-1), 1.0 / out.numel()


def explicit(model, inputs, y, loss):
    """(GGN, EF, H) built from torch.func's Jacobians and Hessians."""
    f, theta = flat_function(model, inputs)
    out = f(theta)
    mean_loss = LOSSES[loss]
    J = jacrev(lambda t: f(t).reshape(-1))(theta)
    H_L = hessian(lambda z: mean_loss(z.reshape(out.shape), y))(out.detach().reshape(-1))
    ggn = J.T @ H_L @ J
    G = jacrev(lambda t: terms_and_scale(loss, f(t), y)[0])(theta)
    ef = terms_and_scale(loss, out, y)[1] * G.T @ G
    H = hessian(lambda t: mean_loss(f(t), y))(theta)
    return ggn.numpy(), ef.numpy(), H.numpy()


def dense(operator, n):
    return (operator @ torch.eye(n)).numpy()


def agree(name, a, b):
    scale = max(np.abs(a).max(), 1e-300)
    assert np.abs(a - b).max() <= 1e-12 * scale, f"{name}: torch.func and curvlinops differ by {np.abs(a - b).max() / scale:.2e}"


def case(name, model, inputs, y, loss, curvlinops=("ggn", "ef"), batch_size=None):
    model = model.double().eval()
    torch.jit.script(model).save(os.path.join(OUT, name + ".pt"))
    torch.save((inputs[0] if len(inputs) == 1 else tuple(inputs), y), os.path.join(OUT, name + "_data.pt"))
    ggn, ef, H = explicit(model, inputs, y, loss)
    params = [p for p in model.parameters()]
    data = [((inputs[0] if len(inputs) == 1 else tuple(inputs)), y)]
    if "ggn" in curvlinops:
        agree(name + " ggn", ggn, dense(GGNLinearOperator(model, LOSSES[loss], params, data,
                                                          check_deterministic=False), ggn.shape[0]))
    if "ef" in curvlinops:
        agree(name + " ef", ef, dense(EFLinearOperator(model, LOSSES[loss], params, data, check_deterministic=False),
                                      ef.shape[0]))
    for kind, matrix in (("ggn", ggn), ("ef", ef), ("H", H)):
        np.save(os.path.join(OUT, f"{name}_{kind}.npy"), matrix)
    cases[name] = {"loss": loss, "n": ggn.shape[0], "samples": len(y), "curvlinops": list(curvlinops),
                   "flags": ["--batch-size", str(batch_size)] if batch_size else []}
    print(f"{name:16s} n = {ggn.shape[0]:4d}", flush=True)


class Mlp(nn.Module):
    def __init__(self, inputs=3, hidden=6, outputs=4):
        super().__init__()
        self.l1 = nn.Linear(inputs, hidden)
        self.l2 = nn.Linear(hidden, outputs)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x)))


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3, padding=1)
        self.f2 = nn.Linear(3 * 4 * 4, 3)

    def forward(self, x):
        return self.f2(torch.flatten(torch.relu(self.c1(x)), 1))


class TinyLM(nn.Module):
    """Token ids -> embedding -> tanh(Linear) -> logits [N, vocab, T]."""

    def __init__(self, vocab=5, dim=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.hid = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab)

    def forward(self, tokens):
        return self.out(torch.tanh(self.hid(self.emb(tokens)))).transpose(1, 2)


class LogSoftmaxMlp(Mlp):
    def forward(self, x):
        return F.log_softmax(self.l2(torch.tanh(self.l1(x))), dim=1)


torch.manual_seed(2323)
case("mlp_ce", Mlp(), [torch.randn(12, 3)], torch.randint(0, 4, (12,)), "cross_entropy", batch_size=5)
case("conv_mse", ConvNet(), [torch.randn(7, 1, 4, 4)], torch.randn(7, 3), "mse")
case("mlp_bce", Mlp(outputs=3), [torch.randn(9, 3)], (torch.rand(9, 3) > 0.5).double(), "bce_with_logits")
tokens, targets = torch.randint(0, 5, (6, 4)), torch.randint(0, 5, (6, 4))
targets[1, 2:] = -100
targets[4, 1:] = -100
case("lm_padded", TinyLM(), [tokens], targets, "cross_entropy", curvlinops=("ggn",), batch_size=2)
# A linear model with MSE: the loss is quadratic in the parameters, the Hessian is the GGN.
case("linear_mse", nn.Linear(4, 2), [torch.randn(10, 4)], torch.randn(10, 2), "mse")
# nll is linear in the log-probabilities: its GGN is zero (curvlinops takes no NLLLoss).
case("logsoftmax_nll", LogSoftmaxMlp(), [torch.randn(8, 3)], torch.randint(0, 4, (8,)), "nll", curvlinops=())

with open(os.path.join(OUT, "curvature.json"), "w") as f:
    json.dump({"cases": cases}, f, indent=2)
print(f"curvature oracles: {len(cases)} cases in {OUT}")
