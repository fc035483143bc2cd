"""A softmax regression whose Hessian has a known rank: Linear(d, c) with cross-entropy on N Gaussian samples.

Each sample adds (diag(p) - p pᵀ) ⊗ [x, 1][x, 1]ᵀ, of rank c - 1, so H (n = (d + 1) c parameters) has rank
N (c - 1) when that is below n: the rank-revealing solver's worst case at a chosen rank, with nothing in H
that a network's structure would make cheaper.
usage: make_softmax.py D C N model.pt data.pt
"""
import sys

import torch


def main():
    d, c, samples = (int(a) for a in sys.argv[1:4])
    torch.manual_seed(0)
    model = torch.nn.Linear(d, c).double()
    inputs = torch.randn(samples, d, dtype=torch.float64)
    targets = torch.randint(0, c, (samples,))
    torch.jit.script(model).save(sys.argv[4])
    torch.save((inputs, targets), sys.argv[5])


if __name__ == "__main__":
    main()
