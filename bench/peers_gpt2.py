"""The published Hessian peers on bench/gpt2.py's GPT-2-sized language model: the top-1 eigenvalue and the
Hutchinson trace (with its standard error) of the Hessian of the mean cross-entropy over all parameters.

usage: peers_gpt2.py OUTDIR [--methods pyhessian,eigenthings,curvlinops] [--tasks top1,trace]
                     [--trace-probes 30] [--tol 1e-3] [--max-iter 100] [--eigenthings-mode lanczos|power_iter]
                     [--layers 12 --width 768 --heads 12 --vocab 50257 --context 1024] [--threads 2] [--seed 0]
                     [--check-exact] [--out FILE.json]
Set OPENBLAS_NUM_THREADS before starting (numpy reads it at import; it matters for --check-exact only).

OUTDIR holds gpt2.py's gpt2.pt and gpt2_data.pt; the size flags must be the ones gpt2.py was run with.
The eager model of gpt2.py gets the TorchScript file's weights, so the peers and dhess see the same
parameters; float32, the whole data as one batch, attention through the math SDPA backend (the fused
CPU kernel has no double backward and no forward-mode derivative). Each peer through its public API:
- pyhessian 0.1: hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False) keeps the gradient's
  graph; each product is one backward through it. top1: .eigenvalues(maxIter, tol, top_n=1), power
  iteration stopped when two successive Rayleigh quotients differ by < tol relative (a stopping rule,
  not an error bound); power iteration finds the eigenvalue of largest magnitude, which on an
  indefinite Hessian can be the most negative one. trace: .trace(maxIter=P, tol=-inf), i.e. exactly
  P Rademacher probes (from one seed it draws the same probes as hessian-eigenthings);
- hessian-eigenthings 1.0.0a5 (no compute_hessian_eigenthings in this version): HessianOperator(model,
  DataLoader, supervised_loss(...)) redoes forward, gradient and double backward per product.
  top1: lanczos(k=1, which="LA", tol, max_iter=m), m doubled from 8 until the Ritz residual
  |beta_m s_m| < tol |theta| (for symmetric H, a bound on |theta - lambda|); or power_iteration_one
  (tol on both the relative change and the relative residual). trace: trace(method="hutchinson");
- curvlinops 3.0.1: HessianLinearOperator(model, nn.CrossEntropyLoss(), params, [(x, y)]) does
  forward-over-reverse (jvp of jacrev) per product. top1: scipy eigsh(k=1, which="LA", tol) on its
  to_scipy() (ARPACK: Ritz residual < tol |theta|). trace: hutchinson_trace(A, num_matvecs=1) once per
  probe, because it returns only the mean and the standard error needs the probe values.
One JSON record per (method, task) is printed; --out writes them all with the set-up.
--check-exact (tiny models only) also forms the dense float64 Hessian and checks each peer against it.
"""
import argparse
import contextlib
import copy
import importlib.metadata
import json
import math
import os
import resource
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt2 import Gpt, add_size_arguments  # noqa: E402
from pyhessian_peer import reset_hwm, rss_hwm_bytes  # noqa: E402

# pyhessian's loss.backward(create_graph=True) warns about the reference cycle it creates on purpose.
warnings.filterwarnings("ignore", message=".*create_graph=True.*")
PACKAGES = {"pyhessian": "PyHessian", "eigenthings": "hessian-eigenthings", "curvlinops": "curvlinops-for-pytorch"}


def math_sdpa():
    return sdpa_kernel(SDPBackend.MATH)


# ---------------------------------------------------------------- the problem
def load_problem(a):
    """The eager model with the TorchScript file's weights, and the data; asserts both give one loss."""
    scripted = torch.jit.load(os.path.join(a.outdir, "gpt2.pt")).eval()
    x, y = torch.load(os.path.join(a.outdir, "gpt2_data.pt"))
    model = Gpt(a.vocab, a.context, a.layers, a.width, a.heads).eval()
    model.load_state_dict(scripted.state_dict())
    with torch.no_grad():
        losses = {"scripted": F.cross_entropy(scripted(x), y).item(), "eager": F.cross_entropy(model(x), y).item()}
        with math_sdpa():
            losses["eager_math_sdpa"] = F.cross_entropy(model(x), y).item()
    print("loss: " + ", ".join("{} {:.8f}".format(k, v) for k, v in losses.items()), flush=True)
    for k, v in losses.items():
        # A wrong --heads changes no shape, only the loss: this catches it.
        assert abs(v - losses["scripted"]) <= 1e-5 * abs(losses["scripted"]), (k, v, losses["scripted"])
    return model, x, y, losses


class Count:
    """Products counted by wrapping the function a peer calls for each one."""

    def __init__(self):
        self.n = 0

    def wrap(self, fn, width=lambda *args: 1):
        def counted(*args, **kw):
            self.n += width(*args)
            return fn(*args, **kw)
        return counted


# ---------------------------------------------------------------- pyhessian
@contextlib.contextmanager
def pyhessian_counted(model, x, y, count):
    """pyhessian's hessian object, its one product routine (a module global) wrapped for counting."""
    from pyhessian import hessian
    module = sys.modules[hessian.__module__]  # pyhessian.hessian: the package's name is the class
    original = module.hessian_vector_product
    module.hessian_vector_product = count.wrap(original)
    try:
        yield hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    finally:
        module.hessian_vector_product = original


def pyhessian_top1(model, x, y, a, count):
    torch.manual_seed(a.seed)
    with pyhessian_counted(model, x, y, count) as h:
        vals, _ = h.eigenvalues(maxIter=a.max_iter, tol=a.tol, top_n=1)
    return {"value": vals[0], "target": "largest magnitude (power iteration)", "converged": count.n < a.max_iter,
            "api": "hessian(...).eigenvalues(maxIter, tol, top_n=1)",
            "accuracy": {"tol": a.tol, "maxIter": a.max_iter},
            "accuracy_note": "tol is PyHessian's stopping rule, |l_k - l_(k-1)| / (|l_(k-1)| + 1e-6) < tol between "
                             "successive power-iteration Rayleigh quotients (the earlier one is returned); it does "
                             "not bound the error, which can be larger when lambda_2 / lambda_1 is near 1"}


def pyhessian_rule_stop(vhv, tol):
    """The probe count at which PyHessian's own trace rule (running mean moves < tol relative) would stop."""
    trace = 0.0
    for i in range(len(vhv)):
        m = float(np.mean(vhv[:i + 1]))
        if abs(m - trace) / (trace + 1e-6) < tol:
            return i + 1
        trace = m
    return None


def pyhessian_trace(model, x, y, a, count):
    torch.manual_seed(a.seed)
    with pyhessian_counted(model, x, y, count) as h:
        # tol=-inf: never stop early (tol=0 would stop at once on a negative running mean: PyHessian
        # divides by trace + 1e-6, not by its absolute value).
        vhv = h.trace(maxIter=a.trace_probes, tol=float("-inf"))
    return {"value": float(np.mean(vhv)), "stderr": float(np.std(vhv, ddof=1) / math.sqrt(len(vhv))),
            "probes": len(vhv), "api": "hessian(...).trace(maxIter=P, tol=-inf)",
            "accuracy": {"probes": a.trace_probes, "distribution": "rademacher"},
            "pyhessian_rule_stop": pyhessian_rule_stop(vhv, a.tol)}


# ---------------------------------------------------------------- hessian-eigenthings
def eigenthings_operator(model, x, y, count):
    from hessian_eigenthings import HessianOperator, LambdaOperator, supervised_loss
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=len(x))
    op = HessianOperator(model, loader, supervised_loss(nn.CrossEntropyLoss()))
    return LambdaOperator(count.wrap(op.matvec), size=op.size, device=op.device, dtype=op.dtype)


def eigenthings_top1(model, x, y, a, count):
    from hessian_eigenthings import lanczos, power_iteration_one
    op = eigenthings_operator(model, x, y, count)
    if a.eigenthings_mode == "power_iter":
        val, _, res, _, conv = power_iteration_one(op, max_iter=a.max_iter, tol=a.tol, seed=a.seed)
        return {"value": val, "target": "largest magnitude (power iteration)", "converged": conv, "residual": res,
                "api": "power_iteration_one(op, max_iter, tol)",
                "accuracy": {"tol": a.tol, "max_iter": a.max_iter},
                "accuracy_note": "stops when the relative change of the Rayleigh quotient and ||Hv - l v|| / |l| "
                                 "are both < tol"}
    # lanczos runs exactly max_iter steps and only reports convergence: restart with twice the steps
    # (same seed, so the Krylov space grows) until its Ritz residual meets tol; all runs' products count.
    m, runs = min(8, a.max_iter), []
    while True:
        r = lanczos(op, k=1, max_iter=m, tol=a.tol, which="LA", seed=a.seed)
        runs.append(m)
        if bool(r.converged[0]) or m >= a.max_iter:
            break
        m = min(2 * m, a.max_iter)
    return {"value": float(r.eigenvalues[0]), "target": "largest algebraic", "converged": bool(r.converged[0]),
            "residual": float(r.residuals[0]), "lanczos_runs": runs,
            "api": "lanczos(op, k=1, max_iter=m, tol, which='LA'), m = 8, 16, ...",
            "accuracy": {"tol": a.tol, "max_iter": a.max_iter},
            "accuracy_note": "converged when the Ritz residual |beta_m s_m| < tol |theta|, which bounds "
                             "|theta - lambda| for symmetric H"}


def eigenthings_trace(model, x, y, a, count):
    from hessian_eigenthings import trace
    r = trace(eigenthings_operator(model, x, y, count), num_matvecs=a.trace_probes, method="hutchinson",
              distribution="rademacher", seed=a.seed)
    return {"value": r.estimate, "stderr": r.stderr, "probes": int(r.samples.numel()),
            "api": "trace(op, num_matvecs=P, method='hutchinson', distribution='rademacher')",
            "accuracy": {"probes": a.trace_probes, "distribution": "rademacher"}}


# ---------------------------------------------------------------- curvlinops
def curvlinops_operator(model, x, y):
    from curvlinops import HessianLinearOperator
    # check_deterministic would spend products on probing; the model is in eval mode, the batch fixed.
    return HessianLinearOperator(model, nn.CrossEntropyLoss(), list(model.parameters()), [(x, y)],
                                 check_deterministic=False, progressbar=False)


def curvlinops_top1(model, x, y, a, count):
    from scipy.sparse.linalg import LinearOperator, eigsh
    h = curvlinops_operator(model, x, y).to_scipy()
    counted = LinearOperator(h.shape, dtype=h.dtype, matvec=count.wrap(h.matvec),
                             matmat=count.wrap(h.matmat, width=lambda m: m.shape[1]))
    v0 = np.random.default_rng(a.seed).standard_normal(h.shape[0])
    val = eigsh(counted, k=1, which="LA", tol=a.tol, v0=v0, return_eigenvectors=False)[0]
    return {"value": float(val), "target": "largest algebraic", "converged": True,
            "api": "scipy eigsh(HessianLinearOperator(...).to_scipy(), k=1, which='LA', tol)",
            "accuracy": {"tol": a.tol, "scipy_dtype": str(h.dtype)},
            "accuracy_note": "ARPACK stops when the Ritz residual < tol |theta| (raises if it does not)"}


def curvlinops_trace(model, x, y, a, count):
    from curvlinops import hutchinson_trace
    op = curvlinops_operator(model, x, y)
    torch.manual_seed(a.seed)
    vhv = []
    for _ in range(a.trace_probes):
        count.n += 1  # num_matvecs=1: one column in its A @ G
        vhv.append(hutchinson_trace(op, num_matvecs=1).item())
    return {"value": float(np.mean(vhv)), "stderr": float(np.std(vhv, ddof=1) / math.sqrt(len(vhv))),
            "probes": len(vhv), "api": "hutchinson_trace(op, num_matvecs=1) per probe (it returns only the mean)",
            "accuracy": {"probes": a.trace_probes, "distribution": "rademacher"}}


RUNS = {("pyhessian", "top1"): pyhessian_top1, ("pyhessian", "trace"): pyhessian_trace,
        ("eigenthings", "top1"): eigenthings_top1, ("eigenthings", "trace"): eigenthings_trace,
        ("curvlinops", "top1"): curvlinops_top1, ("curvlinops", "trace"): curvlinops_trace}


# ---------------------------------------------------------------- measuring
def run_one(method, task, model, x, y, a):
    """One (method, task) on a fresh copy of the model (pyhessian leaves graphs in .grad), timed."""
    fresh = copy.deepcopy(model)
    count = Count()
    reset = reset_hwm()
    t0 = time.perf_counter()
    try:
        with math_sdpa():
            rec = RUNS[method, task](fresh, x, y, a, count)
    except (MemoryError, RuntimeError) as e:  # NotImplementedError is a RuntimeError
        # Out of memory or a derivative the peer needs and torch lacks is a result to record; else a bug.
        known = isinstance(e, (MemoryError, NotImplementedError)) or "memory" in str(e) or "not implemented" in str(e)
        if not known:
            raise
        rec = {"value": None, "unsupported": "{}: {}".format(type(e).__name__, str(e)[:300])}
    rec = {"method": method, "package": "{} {}".format(PACKAGES[method], importlib.metadata.version(PACKAGES[method])),
           "task": task, **rec, "products": count.n, "seconds": time.perf_counter() - t0,
           "peak_rss_bytes": rss_hwm_bytes() if reset else None,
           "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    rec.setdefault("stderr", None)
    print(json.dumps(rec), flush=True)
    return rec


# ---------------------------------------------------------------- the exact answer (tiny models)
def exact(model, x, y, chunk=256):
    """Dense float64 Hessian by vmapped forward-over-reverse products on unit vectors: top eigenvalue, trace."""
    m64 = copy.deepcopy(model).double()
    names, shapes = zip(*[(k, p.shape) for k, p in m64.named_parameters()])
    flat = torch.cat([p.detach().reshape(-1) for p in m64.parameters()])
    n = flat.numel()

    def loss(v):
        ps = {k: t.view(s) for k, t, s in zip(names, v.split([math.prod(s) for s in shapes]), shapes)}
        return F.cross_entropy(torch.func.functional_call(m64, ps, (x,)), y)

    hvp = torch.vmap(lambda e: torch.func.jvp(torch.func.grad(loss), (flat,), (e,))[1])
    hess = torch.empty(n, n, dtype=torch.float64)
    with math_sdpa():
        for j in range(0, n, chunk):
            k = min(chunk, n - j)
            e = torch.zeros(k, n, dtype=torch.float64)
            e[torch.arange(k), j + torch.arange(k)] = 1
            hess[j:j + k] = hvp(e)
    # By row blocks: hess - hess.T or hess.abs() at once would take more n x n temporaries.
    asym = max(float((hess[j:j + chunk] - hess[:, j:j + chunk].T).abs().max()) for j in range(0, n, chunk))
    scale = max(float(hess[j:j + chunk].abs().max()) for j in range(0, n, chunk))
    h = hess.numpy()
    if n <= 8000:
        w = np.linalg.eigvalsh(h)
        top, bottom, how = float(w[-1]), float(w[0]), "numpy.linalg.eigvalsh"
    else:  # eigvalsh would take many minutes on one core; Lanczos on the dense matrix to rounding
        from scipy.sparse.linalg import eigsh
        top, bottom = (float(eigsh(h, k=1, which=w, tol=0, return_eigenvectors=False)[0]) for w in ("LA", "SA"))
        how = "scipy eigsh(dense H, tol=0)"
    return {"n": n, "top1": top, "bottom1": bottom, "largest_magnitude": max(top, bottom, key=abs), "by": how,
            "trace": float(np.trace(h)), "asymmetry": asym / scale}


def check(records, ex, tol):
    """Top-1 within tol relative of the exact; the trace within 3 standard errors. True if all pass."""
    ok = True
    for r in records:
        if r["value"] is None:
            continue
        if r["task"] == "top1":
            r["rel_err_vs_exact"] = abs(r["value"] - ex["top1"]) / abs(ex["top1"])
            r["check_ok"] = r["rel_err_vs_exact"] <= tol
            what = "rel err {:.2e} (tol {:g})".format(r["rel_err_vs_exact"], tol)
            if "magnitude" in r["target"] and ex["largest_magnitude"] != ex["top1"]:
                what += "; exact largest-magnitude eigenvalue {:.8g}, rel err {:.2e}".format(
                    ex["largest_magnitude"], abs(r["value"] - ex["largest_magnitude"]) / abs(ex["largest_magnitude"]))
        else:
            r["z_vs_exact"] = (r["value"] - ex["trace"]) / r["stderr"]
            r["check_ok"] = abs(r["z_vs_exact"]) <= 3
            what = "{:+.2f} standard errors".format(r["z_vs_exact"])
        ok &= r["check_ok"]
        print("check: {:<11} {:<5} {:.8g} vs exact {:.8g}: {} {}".format(
            r["method"], r["task"], r["value"], ex[r["task"]], what, "ok" if r["check_ok"] else "FAIL"), flush=True)
    return ok


def save(out, path):
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir", help="gpt2.py's OUTDIR: gpt2.pt and gpt2_data.pt")
    ap.add_argument("--methods", default="pyhessian,eigenthings,curvlinops")
    ap.add_argument("--tasks", default="top1,trace")
    ap.add_argument("--trace-probes", type=int, default=30, help="Rademacher probes for the trace")
    ap.add_argument("--tol", type=float, default=1e-3, help="each top-1 solver's tol (relative)")
    ap.add_argument("--max-iter", type=int, default=100, help="power iterations / Lanczos steps at most")
    ap.add_argument("--eigenthings-mode", choices=["lanczos", "power_iter"], default="lanczos")
    add_size_arguments(ap)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check-exact", action="store_true", help="dense float64 Hessian check (tiny models only)")
    ap.add_argument("--out", help="write all records here (JSON)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, x, y, losses = load_problem(a)
    n = sum(p.numel() for p in model.parameters())
    print("model: {:,} parameters, tokens {}, {} thread(s)".format(n, list(x.shape), torch.get_num_threads()),
          flush=True)
    out = {"tool": "bench/peers_gpt2.py", "command": sys.argv, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "n": n, "tokens": list(x.shape), "dtype": "float32",
           "sdpa_backend": "math", "losses": losses, "records": []}
    for method in a.methods.split(","):
        for task in a.tasks.split(","):
            out["records"].append(run_one(method, task, model, x, y, a))
            save(out, a.out)  # after each, so that a run killed for memory keeps the ones before
    ok = True
    if a.check_exact:
        t0 = time.perf_counter()
        out["exact"] = exact(model, x, y)
        out["exact"]["seconds"] = time.perf_counter() - t0
        print("exact: " + json.dumps(out["exact"]), flush=True)
        ok = check(out["records"], out["exact"], a.tol)
        save(out, a.out)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
