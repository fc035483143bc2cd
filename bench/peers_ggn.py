"""Gauss-Newton matrix-vector products of the published peers on a dhess built-in convnet
(exported with `dhess export`): curvlinops-for-pytorch's GGNLinearOperator (batched over columns
with vmap) and hessian-eigenthings' GGNOperator (one vector per call, as its Lanczos uses it).
Each multiplies the GGN onto --columns unit vectors (the first columns of G, the dense run's
work) with torch.set_num_threads(T), and is checked against dhess's hessian.h5 of the same run
(--curvature ggn --save-hessian). Writes one JSON record per method to --out.
"""
import argparse
import json
import resource
import time
import warnings

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)


class ConvNet(nn.Module):
    """dhess's builtin:convnet:HW in eager PyTorch: Conv2d(1,32,3,1,1) -> flatten -> Linear(32 HW HW, 5)."""

    def __init__(self, hw):
        super().__init__()
        self.c1 = nn.Conv2d(1, 32, 3, 1, 1)
        self.f2 = nn.Linear(32 * hw * hw, 5)

    def forward(self, x):
        return self.f2(torch.flatten(self.c1(x), 1))


def load(model_path, data_path):
    scripted = torch.jit.load(model_path)
    x, y = torch.load(data_path)
    model = ConvNet(x.shape[-1]).double()
    model.load_state_dict({n: p.detach().double() for n, p in scripted.named_parameters()})
    return model.eval(), x.double(), y


def curvlinops_columns(model, x, y, columns, chunk):
    from curvlinops import GGNLinearOperator
    params = list(model.parameters())
    op = GGNLinearOperator(model, nn.CrossEntropyLoss(), params, [(x, y)], check_deterministic=False,
                           progressbar=False)
    n = sum(p.numel() for p in params)
    out = []
    for j0 in range(0, columns, chunk):
        k = min(chunk, columns - j0)
        E = torch.zeros(n, k, dtype=torch.float64)
        E[torch.arange(j0, j0 + k), torch.arange(k)] = 1
        out.append(op @ E)
    return torch.cat(out, 1)


def eigenthings_columns(model, x, y, columns):
    from hessian_eigenthings import GGNOperator
    op = GGNOperator(model, [(x, y)], lambda m, b: m(b[0]), lambda out, b: F.cross_entropy(out, b[1]))
    n = op.size
    out = torch.empty(n, columns, dtype=torch.float64)
    for j in range(columns):
        e = torch.zeros(n, dtype=torch.float64)
        e[j] = 1
        out[:, j] = op.matvec(e).detach()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--reference", required=True, help="dhess's hessian.h5 of --curvature ggn")
    ap.add_argument("--columns", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, x, y = load(a.model, a.data)
    with h5py.File(a.reference, "r") as f:
        reference = f["hessian"][:, :a.columns]
    scale = np.abs(reference).max()
    records = []
    for name, run in (("curvlinops GGNLinearOperator @ X (vmap)", lambda: curvlinops_columns(model, x, y, a.columns, a.chunk)),
                      ("hessian-eigenthings GGNOperator.matvec", lambda: eigenthings_columns(model, x, y, a.columns))):
        start = time.perf_counter()
        got = run().numpy()
        seconds = time.perf_counter() - start
        records.append({"method": name, "threads": a.threads, "columns": a.columns, "seconds": seconds,
                        "columns_per_second": a.columns / seconds,
                        "max_error_vs_dhess": float(np.abs(got - reference).max() / scale),
                        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})
        print(json.dumps(records[-1]), flush=True)
    with open(a.out, "w") as f:
        json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
