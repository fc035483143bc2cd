"""Equal-accuracy tasks (issue 25, item 2): dhess spectrum and the published peers on one model, each method's
accuracy setting tightened until it meets the target against the exact Hessian, then timed.

usage: peers_accuracy.py OUT.json --model M.pt --data D.pt --kind convnet|gpt|resnet [gpt2.py's size flags]
                         --dhess EXE [--dtype float64|float32] [--ranks 2] [--threads 2] [--seeds 10] [--work DIR]
                         [--tasks top1,top10,trace,diagonal,density] [--methods dhess,pyhessian,eigenthings,curvlinops]
Set OPENBLAS_NUM_THREADS to --threads before starting (numpy reads it at import); mpirun must be allowed to start
--ranks ranks (bench/run.sh sets that up).

The reference is computed here from the float64 model, never by dhess. Up to n = 20,000 it is the exact Hessian,
formed by torch.func (forward-over-reverse on unit vectors: the eager model differentiated twice) and decomposed by
numpy: every eigenvalue, the trace, the diagonal. Past that (the ResNet-20) it is the 10 largest eigenvalues from
scipy's eigsh (ARPACK, tol 1e-6) on curvlinops' float64 operator, and only the top-k tasks run. Every method's
products are in --dtype (float64 by default; float32 has no 1e-6 task, its rounding alone is larger).

Tasks and what "meets the target" means:
- top1, top10 (targets 1e-3, 1e-6): max over the k largest eigenvalues of |estimate - exact| / |exact|. Each
  method's tol starts at the target and shrinks 10x a try until the target is met (down to 1e-12); the time reported
  is the try that met it, as if the user had known which tol to give (the failed tries are listed); a method whose
  error stops halving with a tighter tol is given up on. One seed.
- trace (targets 1e-2, 1e-3 relative): each stochastic method's product count doubles from 12 until its error is within
  the target in 9 of --seeds seeds (a count is abandoned at its second miss); the 0.1% sweep starts from the 1% count.
  Where Hutchinson would need more than 4 n probes for 1% (the trace near zero beside ||H||_F), only the exact run.
  Capped at n products, the price of the exact trace (dhess --diagonal exact). Time: the median seed at that count.
  dhess's exact methods run once: --diagonal exact (n products) and --nonzero (every nonzero eigenpair, certified;
  its sum is the trace, in about twice the rank's products where H has low rank).
- diagonal (target 1e-2): ||d - d_exact||_2 / ||d_exact||_2, the same sweep as the trace.
- density: each method once, at the same 10 probes x 80 Lanczos steps (pyhessian iter=80, n_v=10); the distance is
  the Wasserstein-1 distance between its Gauss quadrature measure (nodes weighted, probes averaged; curvlinops:
  its smoothed density on its grid) and the exact spectrum's, divided by the spectrum's width.
Before the tasks (float64), each peer's product H·v on one Gaussian v is checked against torch.func's
(product_check in OUT: its relative error, and the parameters whose rows are off).
Peers through their public APIs (as bench/peers_gpt2.py, whose docstring says what each tol means), on 2 threads;
dhess as `mpirun -n RANKS dhess spectrum ...`, a process per try: its wall time includes start-up and I/O.
"""
import argparse
import contextlib
import copy
import hashlib
import importlib.metadata
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt2 import Gpt, add_size_arguments  # noqa: E402
from resnet20 import ResNetCifar  # noqa: E402
import peers_gpt2  # noqa: E402
from peers_gpt2 import Count, math_sdpa, pyhessian_counted  # noqa: E402
from pyhessian_peer import reset_hwm, rss_hwm_bytes  # noqa: E402

warnings.filterwarnings("ignore", message=".*create_graph=True.*")
PACKAGES = {"pyhessian": "PyHessian", "eigenthings": "hessian-eigenthings", "curvlinops": "curvlinops-for-pytorch"}
EIGEN_TARGETS = (1e-3, 1e-6)
TRACE_TARGETS = (1e-2, 1e-3)
DIAGONAL_TARGET = 1e-2
SLQ_PROBES, SLQ_STEPS = 10, 80
DENSE_LIMIT = 20000  # past it the reference is ARPACK's top 10 (an n x n float64 matrix is 3.2 GB at 20,000)


# ---------------------------------------------------------------- the problem
class ConvNet(nn.Module):
    """dhess's builtin convnet (Conv2d(C,32,3,1,1) -> flatten -> Linear), eager, named as dhess exports it."""

    def __init__(self, state):
        super().__init__()
        w, f = state["c1.weight"], state["f2.weight"]
        self.c1 = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], 1, w.shape[2] // 2)
        self.f2 = nn.Linear(f.shape[1], f.shape[0])

    def forward(self, x):
        return self.f2(torch.flatten(self.c1(x), 1))


def eager_model(a, state):
    if a.kind == "convnet":
        return ConvNet(state)
    if a.kind == "gpt":
        return Gpt(a.vocab, a.context, a.layers, a.width, a.heads)
    blocks = sum(1 for k in state if k.startswith("layers.") and k.endswith(".conv1.weight")) // 3
    return ResNetCifar(blocks_per_stage=blocks, width=state["conv1.weight"].shape[0])


def load_problem(a):
    """The eager model with the TorchScript file's weights in --dtype, and the data; both must give one loss."""
    dtype = getattr(torch, a.dtype)
    scripted = torch.jit.load(a.model).eval()
    state = scripted.state_dict()
    model = eager_model(a, state)
    model.load_state_dict(state)
    model = model.eval().to(dtype)
    x, y = torch.load(a.data)
    if x.is_floating_point():
        x = x.to(dtype)
    with torch.no_grad(), math_sdpa():
        want = F.cross_entropy(scripted.to(dtype)(x), y).item()
        got = F.cross_entropy(model(x), y).item()
    assert abs(got - want) <= (1e-12 if dtype == torch.float64 else 1e-5) * abs(want), \
        ("eager and TorchScript losses differ", got, want)
    return model, x, y


def exact_product(model, x, y):
    """H·e for rows e of a [k, n] tensor, on a float64 copy: torch.func forward-over-reverse (vmapped); and n."""
    model = copy.deepcopy(model).double()
    x = x.double() if x.is_floating_point() else x
    names, shapes = zip(*[(k, p.shape) for k, p in model.named_parameters()])
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(v):
        ps = {k: t.view(s) for k, t, s in zip(names, v.split([math.prod(s) for s in shapes]), shapes)}
        return F.cross_entropy(torch.func.functional_call(model, ps, (x,)), y)

    return torch.vmap(lambda e: torch.func.jvp(torch.func.grad(loss), (flat,), (e,))[1]), flat.numel()


def exact(model, x, y, cache, chunk=256):
    """Every eigenvalue, the trace and the diagonal of the float64 Hessian, by torch.func and numpy (cached)."""
    if os.path.exists(cache):
        z = np.load(cache)
        return {"eigenvalues": z["eigenvalues"], "diagonal": z["diagonal"], "seconds": float(z["seconds"])}
    t0 = time.perf_counter()
    hvp, n = exact_product(model, x, y)
    hess = np.empty((n, n))
    with math_sdpa():
        for j in range(0, n, chunk):
            k = min(chunk, n - j)
            e = torch.zeros(k, n, dtype=torch.float64)
            e[torch.arange(k), j + torch.arange(k)] = 1
            hess[j:j + k] = hvp(e).numpy()
    hess = (hess + hess.T) / 2
    out = {"eigenvalues": np.linalg.eigvalsh(hess), "diagonal": np.diag(hess).copy(),
           "seconds": time.perf_counter() - t0}
    np.savez(cache, **out)
    return out


def curvlinops_float64(model, x, y):
    from curvlinops import HessianLinearOperator
    m64 = copy.deepcopy(model).double()
    x64 = x.double() if x.is_floating_point() else x
    return HessianLinearOperator(m64, nn.CrossEntropyLoss(), list(m64.parameters()), [(x64, y)],
                                 check_deterministic=False, progressbar=False)


def operator_error(model, x, y):
    """curvlinops' float64 product against torch.func's on one Gaussian vector (relative): the reference's
    operator checked, since curvlinops' products can be wrong (LayerNorm; bench/NOTES.md)."""
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    hvp, _ = exact_product(model, x, y)
    with math_sdpa():
        ref = hvp(v.unsqueeze(0))[0]
        got = (curvlinops_float64(model, x, y) @ v.unsqueeze(1)).squeeze(1)
    return float((got - ref).norm() / ref.norm())


def arpack_reference(model, x, y, cache, k=10, tol=1e-6):
    """Past the dense limit: the k largest eigenvalues of the float64 Hessian, scipy eigsh (ARPACK) on curvlinops'
    operator to tol (its Ritz residuals bound the error by tol |theta|), cached; the operator checked on one vector.
    No trace, diagonal or density."""
    out = dict(np.load(cache)) if os.path.exists(cache) else {}
    if "top" not in out:
        from scipy.sparse.linalg import LinearOperator, eigsh
        t0, h, count = time.perf_counter(), curvlinops_float64(model, x, y).to_scipy(), Count()
        op = LinearOperator(h.shape, dtype=np.float64, matvec=count.wrap(h.matvec),
                            matmat=count.wrap(h.matmat, width=lambda m: m.shape[1]))
        v0 = np.random.default_rng(0).standard_normal(h.shape[0])
        out.update(top=np.sort(eigsh(op, k=k, which="LA", tol=tol, v0=v0, return_eigenvectors=False))[::-1],
                   seconds=time.perf_counter() - t0, products=count.n)
    if "operator_error" not in out:
        out["operator_error"] = operator_error(model, x, y)
    np.savez(cache, **out)
    return {"top": out["top"], "seconds": float(out["seconds"]), "products": int(out["products"]),
            "operator_error": float(out["operator_error"])}


# ---------------------------------------------------------------- dhess
class Dhess:
    """`mpirun -n RANKS dhess spectrum` with everything off but what a task asks for; a process per call."""

    def __init__(self, a):
        self.a = a
        self.out = tempfile.mkdtemp(prefix="dhess_acc_", dir=a.work)

    def __call__(self, flags, seed=0):
        opts = {"--top": "0", "--bottom": "0", "--trace-probes": "0", "--slq-probes": "0", "--diagonal": "none",
                "--seed": str(seed)}
        if "--nonzero" in flags:  # it finds every nonzero eigenpair: no --top/--bottom
            del opts["--top"], opts["--bottom"]
        opts.update(flags)
        cmd = ["mpirun", "-n", str(self.a.ranks), "--bind-to", "none", self.a.dhess, "spectrum", "--model",
               self.a.model, "--data", self.a.data, "--loss", "cross_entropy", "--dtype", self.a.dtype, "--threads",
               "1", "--out", self.out,
               "--force", "-q"] + [t for kv in opts.items() for t in kv if t is not None]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"))
        seconds = time.perf_counter() - t0
        with open(os.path.join(self.out, "summary.json")) as f:
            s = json.load(f)
        return {"summary": s, "seconds": seconds, "run_seconds": s["timings_seconds"]["total"],
                "products": s["hvp_products"],
                "peak_rss_bytes": max(s["memory"]["peak_rss_per_rank"]), "per_rank": True}

    def eigen(self, k, tol, seed):
        r = self(({"--top": str(k), "--tol": repr(tol)}), seed)
        r["values"] = sorted(r.pop("summary")["eigenvalues"]["values"], reverse=True)
        return r

    def trace(self, estimator, m, seed):
        r = self({"--trace-probes": str(m), "--trace-estimator": estimator}, seed)
        r["value"] = r.pop("summary")["trace"]["value"]
        return r

    def exact_diagonal(self):
        r = self({"--diagonal": "exact"})
        s = r.pop("summary")
        r["value"], r["diagonal"] = s["trace"]["value"], np.load(os.path.join(self.out, "diagonal.npy"))
        return r

    def nonzero(self):
        r = self({"--nonzero": None})
        r["value"] = r.pop("summary")["trace"]["value"]
        return r

    def hutchinson_diagonal(self, m, seed):
        r = self({"--diagonal": "hutchinson", "--diagonal-probes": str(m)}, seed)
        r.pop("summary")
        r["diagonal"] = np.load(os.path.join(self.out, "diagonal.npy"))
        return r

    def density(self):
        r = self({"--slq-probes": str(SLQ_PROBES), "--slq-steps": str(SLQ_STEPS)})
        r.pop("summary")
        z = np.genfromtxt(os.path.join(self.out, "slq_nodes.csv"), delimiter=",", names=True)
        r["nodes"], r["weights"] = z["node"], z["weight"]
        return r


# ---------------------------------------------------------------- the peers
class Peers:
    """Each peer through its public API on a fresh copy of the model, products counted, timed."""

    def __init__(self, model, x, y, max_iter):
        self.model, self.x, self.y, self.max_iter = model, x, y, max_iter

    @contextlib.contextmanager
    def measured(self, rec):
        count, reset, t0 = Count(), reset_hwm(), time.perf_counter()
        with math_sdpa():
            yield copy.deepcopy(self.model), count
        rec.update(seconds=time.perf_counter() - t0, products=rec.get("products", count.n),
                   peak_rss_bytes=rss_hwm_bytes() if reset else None, per_rank=False)

    def eigenthings_operator(self, model, count):
        return peers_gpt2.eigenthings_operator(model, self.x, self.y, count)

    def curvlinops_operator(self, model):
        return peers_gpt2.curvlinops_operator(model, self.x, self.y)

    def products(self, v):
        """Each peer's H·v for one float64 vector v (flat, named_parameters order)."""
        from pyhessian.utils import hessian_vector_product
        out, model = {}, copy.deepcopy(self.model)
        shaped = [t.view(p.shape) for t, p in zip(v.split([p.numel() for p in model.parameters()]), model.parameters())]
        with math_sdpa():
            with pyhessian_counted(model, self.x, self.y, Count()) as h:
                out["pyhessian"] = torch.cat([t.reshape(-1) for t in hessian_vector_product(h.gradsH, h.params,
                                                                                              shaped)])
            out["eigenthings"] = self.eigenthings_operator(copy.deepcopy(self.model), Count()).matvec(v)
            out["curvlinops"] = (self.curvlinops_operator(copy.deepcopy(self.model)) @ v.unsqueeze(1)).squeeze(1)
        return out

    # top-k eigenvalues
    def pyhessian_eigen(self, k, tol, seed):
        rec = {}
        with self.measured(rec) as (model, count):
            torch.manual_seed(seed)
            with pyhessian_counted(model, self.x, self.y, count) as h:
                vals, _ = h.eigenvalues(maxIter=self.max_iter, tol=tol, top_n=k)
        rec["values"] = sorted(vals, reverse=True)
        return rec

    def eigenthings_eigen(self, k, tol, seed):
        """1.0.0a5's lanczos runs exactly max_iter steps: the steps are doubled until it converges, and only the
        run that converged is timed (the shorter ones are listed), as every method is timed at the setting that
        met its target."""
        from hessian_eigenthings import lanczos
        m, shorter = 2 * k + 8, []
        while True:
            rec = {}
            with self.measured(rec) as (model, count):
                op = self.eigenthings_operator(model, count)
                # Its default (reorthogonalize=None) returned ghost copies of the top eigenvalues at 56 steps.
                r = lanczos(op, k=k, max_iter=m, tol=tol, which="LA", seed=seed, reorthogonalize=True)
            if bool(r.converged.all()) or m >= op.size:
                break
            shorter.append(m)
            m = min(2 * m, op.size)
        rec.update(lanczos_steps=m, shorter_runs=shorter,
                   values=sorted((float(v) for v in r.eigenvalues), reverse=True))
        return rec

    def curvlinops_eigen(self, k, tol, seed):
        from scipy.sparse.linalg import LinearOperator, eigsh
        rec = {}
        with self.measured(rec) as (model, count):
            h = self.curvlinops_operator(model).to_scipy()
            counted = LinearOperator(h.shape, dtype=h.dtype, matvec=count.wrap(h.matvec),
                                     matmat=count.wrap(h.matmat, width=lambda m: m.shape[1]))
            v0 = np.random.default_rng(seed).standard_normal(h.shape[0])
            vals = eigsh(counted, k=k, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
        rec["values"] = sorted((float(v) for v in vals), reverse=True)
        return rec

    # trace
    def pyhessian_trace(self, m, seed):
        rec = {}
        with self.measured(rec) as (model, count):
            torch.manual_seed(seed)
            with pyhessian_counted(model, self.x, self.y, count) as h:
                rec["value"] = float(np.mean(h.trace(maxIter=m, tol=float("-inf"))))
        return rec

    def eigenthings_trace(self, method, m, seed):
        from hessian_eigenthings import trace
        rec = {}
        with self.measured(rec) as (model, count):
            r = trace(self.eigenthings_operator(model, count), num_matvecs=m, method=method, seed=seed)
            rec["value"] = float(r.estimate)
        return rec

    def curvlinops_trace(self, fn_name, m, seed):
        import curvlinops
        rec = {"products": m}  # num_matvecs: the products each estimator makes in all
        with self.measured(rec) as (model, count):
            torch.manual_seed(seed)
            rec["value"] = float(getattr(curvlinops, fn_name)(self.curvlinops_operator(model), num_matvecs=m))
        return rec

    def curvlinops_diagonal(self, fn_name, m, seed):
        import curvlinops
        rec = {"products": m}
        with self.measured(rec) as (model, count):
            torch.manual_seed(seed)
            rec["diagonal"] = getattr(curvlinops, fn_name)(self.curvlinops_operator(model), num_matvecs=m).numpy()
        return rec

    # density: the quadrature measure (nodes, weights summing to 1)
    def pyhessian_density(self, seed):
        rec = {}
        with self.measured(rec) as (model, count):
            torch.manual_seed(seed)
            with pyhessian_counted(model, self.x, self.y, count) as h:
                nodes, weights = h.density(iter=SLQ_STEPS, n_v=SLQ_PROBES)
        rec["nodes"], rec["weights"] = np.ravel(nodes), np.ravel(weights)
        return rec

    def eigenthings_density(self, seed):
        from hessian_eigenthings import spectral_density
        rec = {}
        with self.measured(rec) as (model, count):
            r = spectral_density(self.eigenthings_operator(model, count), num_runs=SLQ_PROBES,
                                 lanczos_steps=SLQ_STEPS, seed=seed)
        rec["nodes"], rec["weights"] = np.ravel(r.raw_eigenvalues.numpy()), np.ravel(r.raw_weights.numpy())
        return rec

    def curvlinops_density(self, seed):
        from curvlinops import lanczos_approximate_spectrum
        rec = {"products": SLQ_PROBES * SLQ_STEPS}
        with self.measured(rec) as (model, count):
            np.random.seed(seed)
            torch.manual_seed(seed)
            grid, density = lanczos_approximate_spectrum(self.curvlinops_operator(model), ncv=SLQ_STEPS,
                                                         num_repeats=SLQ_PROBES)
        rec["nodes"], rec["weights"] = np.asarray(grid), np.asarray(density)
        return rec


# ---------------------------------------------------------------- equal accuracy
def summarize(rec):
    """What a record keeps: no arrays."""
    kept = ("seconds", "run_seconds", "products", "peak_rss_bytes", "per_rank", "error", "tol", "probes",
            "lanczos_steps", "shorter_runs", "value")
    return {k: v for k, v in rec.items() if k in kept}


def product_check(model, x, y, peers):
    """Each peer's product against torch.func's on one Gaussian vector: relative error overall and the parameters
    whose rows are off by more than 1e-8 (an oracle can itself be wrong; float64 only)."""
    named = list(model.named_parameters())
    v = torch.randn(sum(p.numel() for _, p in named), generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    hvp, _ = exact_product(model, x, y)
    with math_sdpa():
        ref = hvp(v.unsqueeze(0))[0]
    out = {}
    for name, hv in peers.products(v).items():
        rows, o = {}, 0
        for pname, p in named:
            k = p.numel()
            d = float((hv[o:o + k] - ref[o:o + k]).norm() / max(float(ref[o:o + k].norm()), 1e-300))
            if d > 1e-8:
                rows[pname] = d
            o += k
        out[name] = {"relative_error": float((hv - ref).norm() / ref.norm()), "parameters_off": rows}
    print("product check: " + json.dumps(out), flush=True)
    return out


def eigen_sweep(run, k, target, exact_top):
    """tol = target, target/10, ... until the k largest eigenvalues are within target (relative) of the exact,
    or until a tighter tol stops halving the error."""
    tries, tol = [], target
    while tol >= 1e-12:
        try:
            rec = run(k, tol, 0)
        except Exception as e:  # a peer that fails (ARPACK not converging, out of memory) is a result to record
            tries.append({"tol": tol, "failed": "{}: {}".format(type(e).__name__, str(e)[:200])})
            break
        got = np.array(rec["values"][:k])
        rec["error"] = float(np.max(np.abs(got - exact_top) / np.abs(exact_top))) if len(got) == k else math.inf
        rec["tol"] = tol
        tries.append(summarize(rec))
        if rec["error"] <= target:
            return {"met": True, **summarize(rec), "tries": tries}
        if len(tries) > 1 and rec["error"] > tries[-2].get("error", math.inf) / 2:
            break  # a tighter tol no longer buys accuracy (PyHessian's floor, float32's rounding)
        tol /= 10
    return {"met": False, "tries": tries}


def hutchinson_probes_needed(ex, target):
    """Rademacher probes: Var(z'Hz) = 2 (||H||_F^2 - sum H_ii^2); the probes that put 90% of Hutchinson estimates
    within target (relative) of the trace, by the normal approximation (the sweep's count is a draw near it)."""
    variance = 2 * (float(np.sum(ex["eigenvalues"] ** 2)) - float(np.sum(ex["diagonal"] ** 2)))
    return (1.645 * math.sqrt(max(variance, 0.0)) / (target * abs(float(ex["eigenvalues"].sum())))) ** 2


def stochastic_sweep(run, error, target, seeds, start, cap):
    """Products doubled from start until error(run(m, seed)) <= target in all but seeds // 10 seeds (9 of 10).
    Counts stay multiples of 3 and even (curvlinops' Hutch++ and XTrace split their products so)."""
    allowed, m, tried = seeds // 10, start, []
    while m <= cap:
        recs, misses = [], 0
        for seed in range(seeds):
            try:
                rec = run(m, seed)
            except Exception as e:  # recorded, as in eigen_sweep
                return {"met": False, "failed": "{}: {}".format(type(e).__name__, str(e)[:200]), "tried": tried}
            rec["error"] = error(rec)
            recs.append(rec)
            misses += rec["error"] > target
            if misses > allowed:
                break
        tried.append({"probes": m, "seeds_run": len(recs), "misses": misses})
        if misses <= allowed:
            mid = sorted(recs, key=lambda r: r["seconds"])[len(recs) // 2]
            return {"met": True, "probes": m, **{k: v for k, v in summarize(mid).items() if k != "error"},
                    "errors": [r["error"] for r in recs], "tried": tried}
        m *= 2
    return {"met": False, "cap": cap, "tried": tried}


def wasserstein(nodes, weights, exact_eigenvalues):
    """W1 between a measure (nodes, weights) and the exact spectrum's (each eigenvalue 1/n), over its width."""
    from scipy.stats import wasserstein_distance
    w = np.clip(np.asarray(weights, dtype=float), 0, None)
    width = exact_eigenvalues[-1] - exact_eigenvalues[0]
    return float(wasserstein_distance(np.asarray(nodes, dtype=float), exact_eigenvalues, w / w.sum()) / width)


def methods(a, dhess, peers):
    """(task, method label) -> the function a sweep calls."""
    out = {}
    want = set(a.methods.split(","))
    if "dhess" in want:
        out.update({("eigen", "dhess (Lanczos)"): dhess.eigen,
                    ("trace", "dhess Hutch++"): lambda m, s: dhess.trace("hutchpp", m, s),
                    ("trace", "dhess Hutchinson"): lambda m, s: dhess.trace("hutchinson", m, s),
                    ("diagonal", "dhess Hutchinson diagonal"): dhess.hutchinson_diagonal,
                    ("density", "dhess SLQ"): lambda s: dhess.density()})
    if "pyhessian" in want:
        out.update({("eigen", "pyhessian (power iteration)"): peers.pyhessian_eigen,
                    ("trace", "pyhessian Hutchinson"): peers.pyhessian_trace,
                    ("density", "pyhessian SLQ"): peers.pyhessian_density})
    if "eigenthings" in want:
        out.update({("eigen", "eigenthings (Lanczos)"): peers.eigenthings_eigen,
                    ("trace", "eigenthings Hutchinson"): lambda m, s: peers.eigenthings_trace("hutchinson", m, s),
                    ("trace", "eigenthings Hutch++"): lambda m, s: peers.eigenthings_trace("hutch++", m, s),
                    ("density", "eigenthings SLQ"): peers.eigenthings_density})
    if "curvlinops" in want:
        out.update({("eigen", "curvlinops (ARPACK)"): peers.curvlinops_eigen,
                    ("trace", "curvlinops Hutchinson"): lambda m, s: peers.curvlinops_trace("hutchinson_trace", m, s),
                    ("trace", "curvlinops Hutch++"): lambda m, s: peers.curvlinops_trace("hutchpp_trace", m, s),
                    ("trace", "curvlinops XTrace"): lambda m, s: peers.curvlinops_trace("xtrace", m, s),
                    ("diagonal", "curvlinops Hutchinson diagonal"):
                        lambda m, s: peers.curvlinops_diagonal("hutchinson_diag", m, s),
                    ("diagonal", "curvlinops XDiag"): lambda m, s: peers.curvlinops_diagonal("xdiag", m, s),
                    ("density", "curvlinops SLQ"): peers.curvlinops_density})
    return out


def save(out):
    with open(out["path"], "w") as f:
        json.dump(out, f, indent=1)


def report(out, rec):
    out["records"].append(rec)
    print(json.dumps(rec), flush=True)
    save(out)


def run_tasks(a, out, ex, table, dhess):
    tasks = a.tasks.split(",")
    eigen_tasks(a, out, ex, table, tasks)
    if "eigenvalues" not in ex:  # past the dense limit: no exact trace, diagonal or spectrum
        return
    exact = exact_runs(ex, dhess, tasks) if "trace" in tasks or "diagonal" in tasks else None
    if "trace" in tasks:
        trace_tasks(a, out, ex, table, exact)
    if "diagonal" in tasks:
        diagonal_tasks(a, out, ex, table, exact)
    if "density" in tasks:
        density_tasks(out, ex, table)


def eigen_tasks(a, out, ex, table, tasks):
    # float32 products carry relative errors near 1e-7 and more: 1e-6 in an eigenvalue is out of their reach.
    targets = [t for t in EIGEN_TARGETS if a.dtype == "float64" or t >= 1e-4]
    for k in (1, 10):
        if "top{}".format(k) not in tasks:
            continue
        for target in targets:
            for (task, label), run in table.items():
                if task == "eigen":
                    report(out, {"task": "top{}".format(k), "target": target, "method": label,
                                 **eigen_sweep(run, k, target, ex["top"][:k])})


def exact_runs(ex, dhess, tasks):
    """dhess's exact diagonal (its sum the trace), and --nonzero where H has low rank: once each, any target."""
    n, tr, diag = len(ex["diagonal"]), float(ex["eigenvalues"].sum()), ex["diagonal"]
    full = dhess.exact_diagonal()
    diagonal = {"method": "dhess exact (--diagonal exact)", "probes": n, **summarize(full),
                "error": float(np.linalg.norm(full["diagonal"] - diag) / np.linalg.norm(diag))}
    trace = [{**diagonal, "error": abs(full["value"] - tr) / abs(tr)}]
    # --nonzero pays about 1.5 times the rank in products: where H is not of low rank, the exact diagonal is cheaper.
    rank = int(np.sum(np.abs(ex["eigenvalues"]) > 1e-10 * np.abs(ex["eigenvalues"]).max()))
    if "trace" in tasks and rank <= n // 4:
        nonzero = summarize(dhess.nonzero())
        trace.append({"method": "dhess every nonzero eigenpair (--nonzero)", **nonzero,
                      "error": abs(nonzero["value"] - tr) / abs(tr)})
    return {"trace": trace, "diagonal": diagonal}


def trace_tasks(a, out, ex, table, exact):
    n, tr = len(ex["diagonal"]), float(ex["eigenvalues"].sum())
    for target in TRACE_TARGETS:
        for rec in exact["trace"]:
            report(out, {"task": "trace", "target": target, **rec, "met": rec["error"] <= target})
    # Where Hutchinson needs more than 4 n probes for 1%, the trace is near zero for its estimators: only the
    # exact methods run.
    needed = hutchinson_probes_needed(ex, TRACE_TARGETS[0])
    if needed > 4 * n:
        report(out, {"task": "trace", "target": TRACE_TARGETS[0], "method": "stochastic estimators", "met": False,
                     "failed": "trace near zero: Hutchinson needs about {:,.0f} probes for 1% (n = {:,})".format(
                         needed, n)})
        return
    starts = {}
    for target in TRACE_TARGETS:
        for (task, label), run in table.items():
            if task == "trace":
                r = stochastic_sweep(run, lambda rec: abs(rec["value"] - tr) / abs(tr), target, a.seeds,
                                     starts.get(label, 12), n)
                starts[label] = r.get("probes", 2 * n)
                report(out, {"task": "trace", "target": target, "method": label, **r})


def diagonal_tasks(a, out, ex, table, exact):
    n, diag = len(ex["diagonal"]), ex["diagonal"]
    rec = exact["diagonal"]
    report(out, {"task": "diagonal", "target": DIAGONAL_TARGET, **rec, "met": rec["error"] <= DIAGONAL_TARGET})
    for (task, label), run in table.items():
        if task == "diagonal":
            r = stochastic_sweep(run, lambda rec: float(np.linalg.norm(rec["diagonal"] - diag) / np.linalg.norm(diag)),
                                 DIAGONAL_TARGET, a.seeds, 12, n)
            report(out, {"task": "diagonal", "target": DIAGONAL_TARGET, "method": label, **r})


def density_tasks(out, ex, table):
    for (task, label), run in table.items():
        if task != "density":
            continue
        try:
            rec = run(0)
        except Exception as e:  # pyhessian 0.1's density calls torch.eig, removed in torch 1.9
            report(out, {"task": "density", "method": label, "met": False,
                         "failed": "{}: {}".format(type(e).__name__, str(e)[:200])})
            continue
        report(out, {"task": "density", "method": label, **summarize(rec),
                     "distance": wasserstein(rec["nodes"], rec["weights"], ex["eigenvalues"])})


def files_key(*paths):
    """A cached reference belongs to these exact files (a retrained model or other data is another key)."""
    h = hashlib.sha1()
    for path in paths:
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def seconds_since_start():
    """Wall seconds since this process started (/proc/self/stat's starttime, in clock ticks since boot)."""
    with open("/proc/self/stat") as f:
        start = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
        return float(f.read().split()[0]) - start


def main():
    started_before_main = seconds_since_start()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="JSON file of the records")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--kind", choices=["convnet", "gpt", "resnet"], required=True)
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                    help="of every method's products (the reference is float64 either way)")
    add_size_arguments(ap)
    ap.add_argument("--dhess", required=True)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--tasks", default="top1,top10,trace,diagonal,density")
    ap.add_argument("--methods", default="dhess,pyhessian,eigenthings,curvlinops")
    ap.add_argument("--work", default=tempfile.gettempdir())
    ap.add_argument("--max-iter", type=int, default=10000, help="PyHessian's power iterations per eigenvalue")
    ap.add_argument("--append", action="store_true", help="keep OUT's records of the tasks and methods not run now")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_default_dtype(getattr(torch, a.dtype))  # pyhessian draws its probes in the default dtype
    model, x, y = load_problem(a)
    n = sum(p.numel() for p in model.parameters())
    os.makedirs(a.work, exist_ok=True)
    cache = os.path.join(a.work, "reference-" + files_key(a.model, a.data) + ".{}.npz")
    if n <= DENSE_LIMIT:
        ex = exact(model, x, y, cache.format("exact"))
        ex["top"] = ex["eigenvalues"][::-1][:10]
        reference = {"by": "the dense float64 Hessian (torch.func) and numpy eigvalsh", "seconds": ex["seconds"],
                     "trace": float(ex["eigenvalues"].sum()), "smallest": float(ex["eigenvalues"][0]),
                     "frobenius": float(np.linalg.norm(ex["eigenvalues"])),
                     "hutchinson_probes_needed": {str(t): hutchinson_probes_needed(ex, t) for t in TRACE_TARGETS}}
    else:
        ex = arpack_reference(model, x, y, cache.format("arpack"))
        reference = {"by": "scipy eigsh (ARPACK, tol 1e-6) on curvlinops' float64 Hessian operator",
                     "seconds": ex["seconds"], "products": ex["products"],
                     "operator_error_vs_torch_func": ex["operator_error"]}
        print("n = {:,} > {:,}: no exact spectrum, so only the top-k tasks run".format(n, DENSE_LIMIT), flush=True)
    reference["top10"] = ex["top"].tolist()
    out = {"path": a.out, "tool": "bench/peers_accuracy.py", "command": sys.argv, "torch": torch.__version__,
           "threads": a.threads, "ranks": a.ranks, "n": n, "dtype": a.dtype, "seeds": a.seeds,
           "packages": {k: importlib.metadata.version(v) for k, v in PACKAGES.items()},
           "exact": reference, "records": []}
    if a.append and os.path.exists(a.out):  # keep the earlier records of what this call does not run
        with open(a.out) as f:
            # A record's method starts with its package (or "dhess"); others ("stochastic estimators") go with
            # their task.
            mine = set(a.methods.split(","))
            owners = set(PACKAGES) | {"dhess"}
            out["records"] = [r for r in json.load(f)["records"] if r["task"] not in a.tasks.split(",") or
                              (r["method"].split()[0] in owners and r["method"].split()[0] not in mine)]
    print("n = {:,}; reference: {}".format(n, json.dumps(reference)), flush=True)
    save(out)
    # The packages are imported before any task is timed (a first call would otherwise pay for its import);
    # what a Python process pays before its first product is recorded beside, not in, the tasks' times.
    t0 = time.perf_counter()
    for module in ("pyhessian", "hessian_eigenthings", "curvlinops", "scipy.sparse.linalg", "scipy.stats"):
        importlib.import_module(module)
    out["python_start_seconds"] = {"interpreter_and_torch": started_before_main,
                                   "peer_packages": time.perf_counter() - t0}
    peers = Peers(model, x, y, a.max_iter)
    if a.dtype == "float64":
        out["product_check"] = product_check(model, x, y, peers)
    dhess = Dhess(a)
    run_tasks(a, out, ex, methods(a, dhess, peers), dhess)


if __name__ == "__main__":
    main()
