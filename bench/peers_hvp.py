"""Python peers for the full Hessian of a dhess built-in model (exported with `dhess export`).

Each method computes the whole n x n Hessian of the same loss on the same model and data,
is timed with torch.set_num_threads(T), and is checked against dhess's hessian.h5.
Prints one JSON object per method (and writes them all to --out).
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import functorch


def load_problem(model_path, data_path, kind):
    m = torch.jit.load(model_path)
    names, tensors = [], []
    for name, p in m.named_parameters():
        names.append(name)
        tensors.append(p.detach().to(torch.float64).clone())
    shapes = [t.shape for t in tensors]
    sizes = [t.numel() for t in tensors]
    theta = torch.cat([t.reshape(-1) for t in tensors])
    x, y = torch.load(data_path)
    x = x.to(torch.float64)

    def unflatten(th):
        out, o = [], 0
        for s, k in zip(shapes, sizes):
            out.append(th[o:o + k].reshape(s))
            o += k
        return out

    if kind == "convnet":
        def f(th):
            w1, b1, w2, b2 = unflatten(th)
            h = torch.conv2d(x, w1, b1, 1, 1)
            z = torch.nn.functional.linear(torch.flatten(h, 1), w2, b2)
            # cross-entropy written out: functorch's forward-over-reverse has no rule for nll_loss_backward
            return (torch.logsumexp(z, 1) - z.gather(1, y.unsqueeze(1)).squeeze(1)).mean()
    elif kind == "mlp":
        y64 = y.to(torch.float64)

        def f(th):
            w1, b1, w2, b2, w3, b3 = unflatten(th)
            h = torch.tanh(torch.nn.functional.linear(x, w1, b1))
            h = torch.tanh(torch.nn.functional.linear(h, w2, b2))
            z = torch.nn.functional.linear(h, w3, b3)
            return ((z - y64) ** 2).mean()
    else:
        raise SystemExit("unknown kind " + kind)
    return names, theta, f


def eye_rows(n, s, e, dtype):
    v = torch.zeros(e - s, n, dtype=dtype)
    v[torch.arange(e - s), torch.arange(s, e)] = 1
    return v


def method_table(f, theta, chunks):
    n = theta.numel()

    def autograd_loop():
        return torch.autograd.functional.hessian(f, theta, vectorize=False)

    def autograd_vectorized():
        return torch.autograd.functional.hessian(f, theta, vectorize=True)

    def ft_hessian():
        return functorch.hessian(f)(theta)

    def ft_jacrev2():
        return functorch.jacrev(functorch.jacrev(f))(theta)

    def vmap_vjp(chunk):
        # reverse-over-reverse: one retained first-order graph, batched backward over identity rows
        def run():
            _, vjp_fn = functorch.vjp(functorch.grad(f), theta)
            batched = functorch.vmap(lambda v: vjp_fn(v)[0])
            out = torch.empty(n, n, dtype=theta.dtype)
            for s in range(0, n, chunk):
                e = min(n, s + chunk)
                out[s:e] = batched(eye_rows(n, s, e, theta.dtype))
            return out
        return run

    def vmap_jvp(chunk):
        # forward-over-reverse
        def run():
            g = functorch.grad(f)
            batched = functorch.vmap(lambda v: functorch.jvp(g, (theta,), (v,))[1])
            out = torch.empty(n, n, dtype=theta.dtype)
            for s in range(0, n, chunk):
                e = min(n, s + chunk)
                out[s:e] = batched(eye_rows(n, s, e, theta.dtype))
            return out
        return run

    table = {
        "autograd.functional.hessian(vectorize=False)": autograd_loop,
        "autograd.functional.hessian(vectorize=True)": autograd_vectorized,
        "functorch.hessian (jacfwd(jacrev))": ft_hessian,
        "functorch.jacrev(jacrev)": ft_jacrev2,
    }
    for c in chunks:
        c = min(c, n)
        table["functorch.vmap(vjp(grad)) chunk=%d" % c] = vmap_vjp(c)
        table["functorch.vmap(jvp(grad)) chunk=%d" % c] = vmap_jvp(c)
    return table


def partial_loop(f, theta, m):
    """The first m rows of what hessian(vectorize=False) does: one backward pass per gradient entry."""
    th = theta.detach().requires_grad_(True)
    g = torch.autograd.grad(f(th), th, create_graph=True)[0]
    for i in range(m):
        torch.autograd.grad(g[i], th, retain_graph=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--kind", required=True, choices=["convnet", "mlp"])
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--reference", help="dhess hessian.h5 to check against")
    ap.add_argument("--chunks", default="64,256", help="chunk sizes of the vmap(HVP) peers")
    ap.add_argument("--repeats", type=int, default=1, help="best of this many timed runs")
    ap.add_argument("--budget", type=float, default=600.0, help="seconds; longer methods are timed on a fraction")
    ap.add_argument("--methods", default="", help="comma-separated substrings selecting methods")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    names, theta, f = load_problem(a.model, a.data, a.kind)
    n = theta.numel()
    ref = None
    if a.reference:
        import h5py
        with h5py.File(a.reference, "r") as h:
            ref = np.asarray(h["hessian"][...])
    f(theta)  # warm-up
    results = []
    for name, fn in method_table(f, theta, [int(c) for c in a.chunks.split(",")]).items():
        if a.methods and not any(s in name for s in a.methods.split(",")):
            continue
        rec = {"method": name, "n": n, "threads": a.threads, "model": a.kind}
        try:
            if name.startswith("autograd.functional.hessian(vectorize=False)") and n > 1000:
                # estimate from a fraction first: n backward passes can be long
                m = max(64, n // 50)
                t0 = time.perf_counter()
                partial_loop(f, theta, m)
                est = (time.perf_counter() - t0) * n / m
                rec["estimate_from_fraction_seconds"] = est
                if est > a.budget:
                    m = max(m, int(n * a.budget / est / 4))
                    t0 = time.perf_counter()
                    partial_loop(f, theta, m)
                    rec["seconds"] = (time.perf_counter() - t0) * n / m
                    rec["extrapolated_from_columns"] = m
                    results.append(rec)
                    print(json.dumps(rec), flush=True)
                    continue
            best = None
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                h = fn()
                dt = time.perf_counter() - t0
                best = dt if best is None else min(best, dt)
            rec["seconds"] = best
            h = h.detach().reshape(n, n).numpy()
            if ref is not None:
                scale = np.abs(ref).max()
                rec["max_abs_diff_relative"] = float(np.abs(h - ref).max() / scale)
            del h
        except Exception as e:  # a peer that cannot do it is a result too
            rec["error"] = "%s: %s" % (type(e).__name__, str(e).splitlines()[0][:300])
        rec["columns_per_second"] = n / rec["seconds"] if rec.get("seconds") else None
        results.append(rec)
        print(json.dumps(rec), flush=True)
    rec = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    with open(a.out, "w") as fh:
        json.dump({"results": results, **rec}, fh, indent=1)


if __name__ == "__main__":
    main()
