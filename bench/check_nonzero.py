#!/usr/bin/env python3
"""Independent check of `dhess spectrum --nonzero` on the built-in convnet, with eager PyTorch.

The network is rebuilt as an eager nn.Module (Conv2d(1,32,3,1,1) -> flatten -> Linear) holding the
weights of the exported TorchScript file, and every Hessian-vector product is Python autograd
differentiated twice in float64 -- nothing dhess computed except the pairs being checked:

  residual      ||H z - lambda z|| / max|lambda| for sampled eigenpairs (largest, smallest, random)
  completeness  ||H g - Z Z^T H g|| / ||H g|| for Gaussian g: H's range lies in the span of Z
  orthonormal   max |Z^T Z - I|

    dhess export --model builtin:convnet:64 --model-out m.pt --data-out d.pt
    mpiexec -n 2 dhess spectrum --nonzero --model m.pt --data d.pt --loss cross_entropy --out r
    .venv/bin/python bench/check_nonzero.py --model m.pt --data d.pt --result r --json check.json
"""
import argparse
import json
import os
import time

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvNet(nn.Module):
    def __init__(self, hw, channels=32, classes=5):
        super().__init__()
        self.c1 = nn.Conv2d(1, channels, 3, 1, 1)
        self.f2 = nn.Linear(channels * hw * hw, classes)

    def forward(self, x):
        return self.f2(torch.flatten(self.c1(x), 1))


def load_problem(model_path, data_path):
    state = torch.jit.load(model_path).state_dict()
    x, y = torch.load(data_path)
    net = ConvNet(x.shape[-1]).double()
    net.load_state_dict({k: v.double() for k, v in state.items()})
    return net.eval(), x.double(), y


class Hessian:
    """H v by double backward on the eager model, in dhess's layout (named_parameters order)."""

    def __init__(self, net, x, y, layout):
        self.params = [p for _, p in net.named_parameters()]
        names = [name for name, _ in net.named_parameters()]
        if names != [p["name"] for p in layout["parameters"]]:
            raise SystemExit(f"parameter order differs from layout.json: {names}")
        loss = F.cross_entropy(net(x), y)
        self.grads = torch.autograd.grad(loss, self.params, create_graph=True)
        self.n = sum(p.numel() for p in self.params)

    def __call__(self, v):
        pieces, offset = [], 0
        for p in self.params:
            pieces.append(torch.from_numpy(v[offset:offset + p.numel()]).view_as(p))
            offset += p.numel()
        dot = sum((g * piece).sum() for g, piece in zip(self.grads, pieces))
        hv = torch.autograd.grad(dot, self.params, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--result", required=True, help="the --out directory of dhess spectrum --nonzero")
    ap.add_argument("--pairs", type=int, default=16, help="eigenpairs checked (4 largest, 4 smallest, random)")
    ap.add_argument("--probes", type=int, default=8, help="Gaussian vectors of the completeness check")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    torch.set_grad_enabled(True)
    rng = np.random.default_rng(7)
    layout = json.load(open(os.path.join(args.result, "layout.json")))
    w = np.load(os.path.join(args.result, "eigenvalues.npy"))
    with h5py.File(os.path.join(args.result, "eigenvectors.h5"), "r") as f:
        Z = f["eigenvectors"][:]
    t = time.time()
    H = Hessian(*load_problem(args.model, args.data), layout)
    if Z.shape != (H.n, w.size):
        raise SystemExit(f"eigenvectors.h5 is {Z.shape}, expected ({H.n}, {w.size})")
    scale = np.abs(w).max()
    r = w.size
    ends = sorted(set(range(min(4, r))) | set(range(max(0, r - 4), r)))
    rest = [i for i in range(r) if i not in ends]
    sample = ends + sorted(rng.choice(rest, size=min(len(rest), max(0, args.pairs - len(ends))), replace=False).tolist())
    residuals = {int(i): float(np.linalg.norm(H(Z[:, i]) - w[i] * Z[:, i]) / scale) for i in sample}
    outside = []
    for _ in range(args.probes):
        hg = H(rng.standard_normal(H.n))
        outside.append(float(np.linalg.norm(hg - Z @ (Z.T @ hg)) / np.linalg.norm(hg)))
    gram = Z.T @ Z
    report = {
        "n": H.n,
        "nonzero_eigenvalues": r,
        "negative": int((w < 0).sum()),
        "positive": int((w > 0).sum()),
        "max_abs_eigenvalue": float(scale),
        "pairs_checked": len(sample),
        "max_residual": max(residuals.values()),
        "residuals": residuals,
        "probes": args.probes,
        "max_outside_span": max(outside),
        "outside_span": outside,
        "orthonormality": float(np.abs(gram - np.eye(r)).max()),
        "seconds": time.time() - t,
    }
    print(json.dumps({k: v for k, v in report.items() if k not in ("residuals", "outside_span")}, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
