"""The Python route to the Hessian spectrum: torch Hessian -> one n x n matrix -> numpy eigvalsh.

Uses the fastest memory-safe peer measured in section a at the same thread count
(the autograd loop or a chunked vmap HVP: the one-shot vmap methods need ~n x batch x
activations and do not fit 24 GB at n = 23,365).
"""
import argparse
import glob
import json
import os
import resource
import time

import numpy as np
import torch

import peers_hvp

SAFE = ("autograd.functional.hessian(vectorize=False)", "functorch.vmap(vjp(grad))", "functorch.vmap(jvp(grad))")


def fastest_safe(peers_dir, threads):
    best = None
    for path in glob.glob(os.path.join(peers_dir, "a_convnet_*_python_t%d.json" % threads)):
        for r in json.load(open(path))["results"]:
            if r.get("seconds") and r["method"].startswith(SAFE) and "extrapolated_from_columns" not in r:
                if best is None or r["seconds"] < best["seconds"]:
                    best = r
    return best["method"] if best else "functorch.vmap(vjp(grad)) chunk=64"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--kind", default="convnet")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--peers", help="raw results of section a (to pick the method)")
    ap.add_argument("--method", help="override the method")
    ap.add_argument("--reference", help="dhess eigenvalues.npy")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t_start = time.perf_counter()
    names, theta, f = peers_hvp.load_problem(a.model, a.data, a.kind)
    n = theta.numel()
    method = a.method or fastest_safe(a.peers, a.threads)
    chunk = int(method.split("chunk=")[1]) if "chunk=" in method else 0
    table = peers_hvp.method_table(f, theta, [chunk] if chunk else [])
    t0 = time.perf_counter()
    h = table[method]().detach().reshape(n, n)
    t_hessian = time.perf_counter() - t0
    h = h.numpy()
    rss_after_hessian = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    w = np.linalg.eigvalsh(h)
    t_eig = time.perf_counter() - t0
    rec = {"route": method + " -> numpy.linalg.eigvalsh", "n": n, "threads": a.threads,
           "hessian_seconds": t_hessian, "eigvalsh_seconds": t_eig,
           "total_seconds": time.perf_counter() - t_start,
           "peak_rss_after_hessian_bytes": rss_after_hessian,
           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if a.reference and os.path.exists(a.reference):
        ref = np.load(a.reference)
        rec["max_abs_diff_relative_to_dhess"] = float(np.abs(w - ref).max() / np.abs(ref).max())
    with open(a.out, "w") as fh:
        json.dump(rec, fh, indent=1)
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
