"""PyHessian's algorithms as PyHessian runs them, on a TorchScript model and torch.save'd data (issue 14).

usage: pyhessian_peer.py --model M.pt --data D.pt [--top K] [--trace-probes P] [--trace-rule fixed|pyhessian]
                         [--slq-probes P --slq-steps S] [--threads T] [--dtype float32|float64] [--seed S]
                         --json OUT.json
       pyhessian_peer.py --model M.pt --data D.pt --hvp-profile [--profile-widths 1,4,16,64]
                         [--profile-dtypes float32,float64] [--profile-images N] --json OUT.json

PyHessian itself cannot be installed here (no network), so this is a reimplementation of
pyhessian/hessian.py and pyhessian/utils.py at amirgholami/PyHessian@de8cf23 with the same
algorithms, constants and stopping rules (the line numbers below are of that commit):
- the one-batch mode (hessian(data=(x, y)), full_dataset=False, hessian.py#L46-L61): one forward of
  the whole data set, the first-order graph kept, every product a torch.autograd.grad of the
  gradient against it with retain_graph=True (utils.py#L75-L87). The loss is nn.CrossEntropyLoss()
  (mean), the model in eval mode;
- eigenvalues(maxIter=100, tol=1e-3, top_n=K) (hessian.py#L93-L140): power iteration from a
  normalised randn vector, v projected out of the eigenvectors found so far (orthnormal, utils.py#L90-L97)
  before every product, stopped when two successive Rayleigh quotients differ by < tol relative
  (|a - b| / (|a| + 1e-6)); the value reported is the earlier of the two, as PyHessian's is;
- trace(maxIter=100, tol=1e-3) (hessian.py#L142-L173): Hutchinson with Rademacher probes. PyHessian
  stops when the running mean moves by < tol relative; the issue compares at *equal probe counts*,
  so by default exactly --trace-probes probes are run (--trace-rule fixed) and the probe count at
  which PyHessian's rule would have stopped is recorded (pyhessian_rule_stop); --trace-rule
  pyhessian stops there instead (maxIter = --trace-probes);
- density(iter=S, n_v=P) (hessian.py#L175-L250): Lanczos from a normalised Rademacher vector,
  every new vector orthonormalised against all earlier ones (full reorthogonalisation, one
  Gram-Schmidt pass), T's eigenpairs by torch.linalg.eig, nodes = Re(eigenvalues),
  weights = (first eigenvector components)^2.
Random vectors are drawn in float32 (PyHessian's default dtype) from torch's global generator,
reseeded per phase (seed + 0 for the eigenvalues, + 1 trace, + 2 density) so that a float64 run
starts from the same vectors and a phase's values do not depend on which other phases ran.
The model is loaded with torch.jit.load and run with torch.jit.optimized_execution(False), as
eager PyTorch would run PyHessian's nn.Module (no autodiff subgraphs of the JIT in the graph).

--hvp-profile instead times single and vmap-batched products (functorch.vmap over
torch.autograd.grad of the kept gradient: the batching dhess does in C++) at each width and
dtype on 1 thread, and records torch.profiler's top operators by self CPU time.
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import numpy as np
import torch

PYHESSIAN = "https://github.com/amirgholami/PyHessian/blob/de8cf239ace21c7754ee599255897ebf3eed19cb/pyhessian/"
TOL = 1e-3
MAX_ITER = 100


# ---------------------------------------------------------------- machine state
def cpu_jiffies():
    """(all, idle + iowait, steal) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:8]), v[3] + v[4], v[7]


def own_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def rss_hwm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def rss_now_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def malloc_trim():
    """Hand freed heap memory back to the kernel (glibc), so that RSS baselines are not inflated."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_hwm():
    """Reset VmHWM to the current RSS (Linux >= 4.0), so that a phase's own peak can be read."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Meter:
    """Wall, own CPU, other work on the machine (foreign cores) and peak RSS over a block."""

    def __init__(self, peak=True):
        self.hwm_reset = reset_hwm() if peak else False
        self.t0 = time.perf_counter()
        self.cpu0 = own_cpu_seconds()
        self.j0 = cpu_jiffies()

    def stop(self):
        wall = time.perf_counter() - self.t0
        cpu = own_cpu_seconds() - self.cpu0
        total1, idle1, steal1 = cpu_jiffies()
        total = total1 - self.j0[0]
        ncpu = os.cpu_count()
        busy_cores = ncpu * (1 - (idle1 - self.j0[1] + steal1 - self.j0[2]) / total) if total else 0.0
        return {"seconds": wall, "cpu_seconds": cpu,
                "foreign_cores": round(max(0.0, busy_cores - cpu / wall), 3) if wall > 0 else 0.0,
                "steal_cores": round(ncpu * (steal1 - self.j0[2]) / total, 3) if total else 0.0,
                "peak_rss_bytes": rss_hwm_bytes() if self.hwm_reset else None}


# ---------------------------------------------------------------- PyHessian's utils.py, rewritten
def group_product(xs, ys):
    return sum(torch.sum(x * y) for x, y in zip(xs, ys))


def group_add_(xs, ys, alpha):
    """xs += alpha * ys in place (PyHessian's group_add mutates its first argument)."""
    for x, y in zip(xs, ys):
        x.data.add_(y * alpha)
    return xs


def normalization(v):
    s = group_product(v, v) ** 0.5
    s = s.cpu().item()
    return [vi / (s + 1e-6) for vi in v]


def orthnormal(w, vs):
    for v in vs:
        w = group_add_(w, v, -group_product(w, v))
    return normalization(w)


class Problem:
    """The one-batch PyHessian set-up: model, whole data as one batch, the gradient with its graph."""

    def __init__(self, model_path, data_path, dtype, images=None):
        self.dtype = dtype
        self.model = torch.jit.load(model_path).eval().to(dtype)
        x, y = torch.load(data_path)
        if isinstance(x, (tuple, list)):
            raise SystemExit("pyhessian_peer.py: one input tensor expected (PyHessian's model(inputs))")
        if images is not None:
            x, y = x[:images], y[:images]
        self.x = x.to(dtype)
        self.y = y
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.n = sum(p.numel() for p in self.params)
        self.hvps = 0
        self.grads = None
        self.log = None  # [seconds, foreign cores] per product, when a list

    def build_graph(self):
        with torch.jit.optimized_execution(False):
            loss = torch.nn.CrossEntropyLoss()(self.model(self.x), self.y)
            self.grads = torch.autograd.grad(loss, self.params, create_graph=True)
        self.loss = loss.item()

    def hvp(self, v):
        self.hvps += 1
        m = Meter(peak=False) if self.log is not None else None
        with torch.jit.optimized_execution(False):
            hv = torch.autograd.grad(self.grads, self.params, grad_outputs=v, only_inputs=True, retain_graph=True)
        if m is not None:
            r = m.stop()
            self.log.append([round(r["seconds"], 4), r["foreign_cores"]])
        return hv

    def hvp_batched(self, vs):
        """vs: per parameter [k, *shape]; one backward pass through functorch's vmap."""
        import functorch
        self.hvps += vs[0].shape[0]

        def one(*v):
            return torch.autograd.grad(self.grads, self.params, grad_outputs=v, retain_graph=True)
        with torch.jit.optimized_execution(False):
            return functorch.vmap(one)(*vs)

    def randn(self):
        return [torch.randn(p.size()).to(self.dtype) for p in self.params]

    def rademacher(self):
        v = [torch.randint_like(p, high=2, dtype=torch.float32) for p in self.params]
        for vi in v:
            vi[vi == 0] = -1
        return [vi.to(self.dtype) for vi in v]


# ---------------------------------------------------------------- PyHessian's hessian.py, rewritten
def eigenvalues(pb, top_n, max_iter=MAX_ITER, tol=TOL):
    """Deflated power iteration; also records the cumulative cost after each eigenvalue."""
    vals, vecs, record = [], [], []
    t0, h0 = time.perf_counter(), pb.hvps
    while len(vals) < top_n:
        eigenvalue = None
        v = normalization(pb.randn())
        iterations = 0
        for _ in range(max_iter):
            iterations += 1
            v = orthnormal(v, vecs)
            hv = pb.hvp(v)
            tmp = group_product(hv, v).cpu().item()
            v = normalization(hv)
            if eigenvalue is None:
                eigenvalue = tmp
            elif abs(eigenvalue - tmp) / (abs(eigenvalue) + 1e-6) < tol:
                break
            else:
                eigenvalue = tmp
        vals.append(eigenvalue)
        vecs.append(v)
        record.append({"eigenvalue": eigenvalue, "iterations": iterations, "converged": iterations < max_iter,
                       "hvps_cumulative": pb.hvps - h0, "seconds_cumulative": time.perf_counter() - t0})
    return vals, vecs, record


def pyhessian_trace_stop(vhv, tol=TOL):
    """The probe count at which PyHessian's trace() would have returned, given these probe values."""
    trace = 0.0
    for i in range(len(vhv)):
        m = float(np.mean(vhv[:i + 1]))
        if abs(m - trace) / (abs(trace) + 1e-6) < tol:
            return i + 1
        trace = m
    return None


def hutchinson(pb, probes, rule, tol=TOL):
    vhv = []
    trace = 0.0
    for _ in range(probes):
        v = pb.rademacher()
        hv = pb.hvp(v)
        vhv.append(group_product(hv, v).cpu().item())
        if rule == "pyhessian":
            if abs(np.mean(vhv) - trace) / (abs(trace) + 1e-6) < tol:
                break
            trace = float(np.mean(vhv))
    return vhv


def density(pb, steps, runs):
    nodes_all, weights_all = [], []
    for _ in range(runs):
        v = normalization(pb.rademacher())
        v_list, alphas, betas = [v], [], []
        w = None
        for i in range(steps):
            if i == 0:
                w_prime = list(pb.hvp(v))
                alpha = group_product(w_prime, v)
                alphas.append(alpha.cpu().item())
                w = group_add_(w_prime, v, -alpha)
            else:
                beta = torch.sqrt(group_product(w, w))
                betas.append(beta.cpu().item())
                if betas[-1] != 0.0:
                    v = orthnormal(w, v_list)
                else:
                    v = orthnormal(pb.randn(), v_list)
                v_list.append(v)
                w_prime = list(pb.hvp(v))
                alpha = group_product(w_prime, v)
                alphas.append(alpha.cpu().item())
                w_tmp = group_add_(w_prime, v, -alpha)
                w = group_add_(w_tmp, v_list[-2], -beta)
        t = torch.zeros(steps, steps, dtype=pb.dtype)
        for i in range(len(alphas)):
            t[i, i] = alphas[i]
            if i < len(alphas) - 1:
                t[i + 1, i] = betas[i]
                t[i, i + 1] = betas[i]
        evals, evecs = torch.linalg.eig(t)
        nodes_all.append([float(e) for e in evals.real])
        weights_all.append([float(w) for w in torch.pow(evecs[0, :], 2).real])
    return nodes_all, weights_all


# ---------------------------------------------------------------- the algorithm run
def product_log(pb, ph):
    """Attach the phase's per-product [seconds, foreign cores] and the median of the clean ones."""
    ph["products"] = pb.log
    clean = sorted(t for t, f in pb.log if f < QUIET)
    ph["clean_products"] = len(clean)
    ph["clean_median_seconds_per_product"] = clean[len(clean) // 2] if clean else None
    pb.log = []


def run_algorithms(a, rec):
    dtype = getattr(torch, a.dtype)
    m = Meter()
    pb = Problem(a.model, a.data, dtype)
    rec["phases"]["load"] = m.stop()
    rec.update({"n": pb.n, "images": int(pb.x.shape[0]), "parameters": len(pb.params)})
    m = Meter()
    pb.build_graph()
    rec["phases"]["setup"] = m.stop()
    rec["values"] = {"loss": pb.loss}
    print("peer: n = {:,}, {} images, {}, {} thread(s); loss {:.6g}; graph {:.2f} s".format(
        pb.n, rec["images"], a.dtype, a.threads, pb.loss, rec["phases"]["setup"]["seconds"]), flush=True)

    pb.log = []
    if a.top > 0:
        torch.manual_seed(a.seed)
        m = Meter()
        h0 = pb.hvps
        vals, _, per = eigenvalues(pb, a.top)
        ph = m.stop()
        ph["hvps"] = pb.hvps - h0
        product_log(pb, ph)
        ph["per_eigenvalue"] = per
        first = per[0]
        # The first eigenpair of a top_n=K call is the top_n=1 call's (same seed, same draws).
        rec["phases"]["top1"] = {"seconds": first["seconds_cumulative"], "hvps": first["hvps_cumulative"],
                                 "iterations": first["iterations"],
                                 "from": "the first eigenvalue of the top-%d call" % a.top if a.top > 1 else "top-1"}
        if a.top > 1:
            rec["phases"]["topk"] = ph
        else:
            rec["phases"]["top1"].update(ph)
        rec["values"]["top_eigenvalues"] = vals
        print("peer: top {}: {} in {:.1f} s, {} products".format(a.top, ["%.6g" % v for v in vals], ph["seconds"],
                                                                ph["hvps"]), flush=True)

    if a.trace_probes > 0:
        torch.manual_seed(a.seed + 1)
        m = Meter()
        h0 = pb.hvps
        vhv = hutchinson(pb, a.trace_probes, a.trace_rule)
        ph = m.stop()
        ph["hvps"] = pb.hvps - h0
        product_log(pb, ph)
        rec["phases"]["trace"] = ph
        k = len(vhv)
        rec["values"].update({
            "trace": float(np.mean(vhv)), "trace_probes": k, "trace_rule": a.trace_rule,
            "trace_stderr": float(np.std(vhv, ddof=1) / math.sqrt(k)) if k > 1 else None,
            "trace_vhv": vhv, "pyhessian_rule_stop": pyhessian_trace_stop(vhv)})
        print("peer: trace {:.6g} +- {:.3g} ({} probes; PyHessian's rule would stop at {}) in {:.1f} s".format(
            rec["values"]["trace"], rec["values"]["trace_stderr"] or 0, k, rec["values"]["pyhessian_rule_stop"],
            ph["seconds"]), flush=True)

    if a.slq_probes > 0:
        torch.manual_seed(a.seed + 2)
        m = Meter()
        h0 = pb.hvps
        nodes, weights = density(pb, a.slq_steps, a.slq_probes)
        ph = m.stop()
        ph["hvps"] = pb.hvps - h0
        product_log(pb, ph)
        rec["phases"]["density"] = ph
        rec["values"]["density"] = {"runs": a.slq_probes, "steps": a.slq_steps, "nodes": nodes, "weights": weights}
        print("peer: density {} x {} steps in {:.1f} s; extreme nodes {:.6g} .. {:.6g}".format(
            a.slq_probes, a.slq_steps, ph["seconds"], min(min(r) for r in nodes), max(max(r) for r in nodes)),
            flush=True)
    rec["hvps_total"] = pb.hvps


# ---------------------------------------------------------------- the product profile
def categorize(name):
    s = name.lower()
    if "conv" in s or "mkldnn" in s or "thnn" in s or "im2col" in s or "col2im" in s:
        return "convolution"
    if "batch_norm" in s:
        return "batch_norm"
    if "threshold" in s or "relu" in s:
        return "relu"
    if "mm" in s or "linear" in s or "addmm" in s:
        return "matmul"
    if "softmax" in s or "nll" in s or "cross_entropy" in s:
        return "loss"
    if any(k in s for k in ("add", "mul", "sub", "div", "sum", "mean", "fill", "zero", "copy", "empty", "cat",
                            "stack", "pad", "slice", "view", "reshape", "expand", "permute", "transpose",
                            "movedim", "as_strided", "select", "clone", "to", "contiguous", "unsqueeze",
                            "squeeze", "detach", "ones", "resize", "set_", "_batch", "flatten", "avg_pool",
                            "mean", "where", "pow", "neg", "index")):
        return "elementwise, memory and layout"
    return "other"


def profile_ops(fn, top):
    """torch.profiler on one call of fn: the top ops by self CPU time, and totals by category."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: -e.self_cpu_time_total)
    ops = [{"op": e.key, "calls": e.count, "self_seconds": e.self_cpu_time_total / 1e6,
            "share": e.self_cpu_time_total / total} for e in events[:top]]
    cats = {}
    for e in events:
        c = categorize(e.key)
        cats[c] = cats.get(c, 0.0) + e.self_cpu_time_total
    by_cat = {c: {"self_seconds": t / 1e6, "share": t / total} for c, t in sorted(cats.items(), key=lambda kv: -kv[1])}
    return {"total_self_seconds": total / 1e6, "top_ops": ops, "by_category": by_cat}


def busy_cores(seconds):
    t0, i0, _ = cpu_jiffies()
    time.sleep(seconds)
    t1, i1, _ = cpu_jiffies()
    return os.cpu_count() * (1 - (i1 - i0) / (t1 - t0)) if t1 > t0 else 0.0


def wait_quiet(limit):
    """Wait (at most `limit` s) until other work uses < 0.25 core for two 1-s samples; seconds waited."""
    t0 = time.perf_counter()
    quiet = 0
    while time.perf_counter() - t0 < limit and quiet < 2:
        quiet = quiet + 1 if busy_cores(1.0) < QUIET else 0
    return time.perf_counter() - t0


QUIET = 0.25  # foreign cores below which a timing counts as clean


def timed_call(fn, a, slow_seconds=30.0):
    """Time fn() on a quiet machine: wait for quiet before each attempt, redo an attempt that other work
    disturbed (>= QUIET foreign cores), up to --profile-attempts; --profile-repeats clean ones (one when slow).
    Returns (best seconds, all attempts [{seconds, foreign_cores}], clean?)."""
    attempts, clean = [], []
    for _ in range(a.profile_attempts):
        waited = wait_quiet(a.profile_wait_quiet) if a.profile_wait_quiet > 0 else 0.0
        m = Meter(peak=False)
        fn()
        r = m.stop()
        attempts.append({"seconds": r["seconds"], "foreign_cores": r["foreign_cores"], "steal_cores": r["steal_cores"],
                         "waited": round(waited, 1)})
        if r["foreign_cores"] < QUIET:
            clean.append(r["seconds"])
        if len(clean) >= a.profile_repeats or (clean and clean[-1] > slow_seconds):
            break
    if clean:
        return min(clean), attempts, True
    return min(x["seconds"] for x in attempts), attempts, False


def rel_err(out, ref):
    num = math.sqrt(sum(float(((o - q) ** 2).sum()) for o, q in zip(out, ref)))
    den = math.sqrt(sum(float((q ** 2).sum()) for q in ref))
    return num / den if den > 0 else num


def measure(pb, k, a):
    """Seconds per product at batch width k on pb's images, its extra peak RSS, and exactness."""
    torch.manual_seed(k)
    vs = [torch.randn((k,) + tuple(p.shape)).to(pb.dtype) for p in pb.params]
    single = [v[0] for v in vs]
    # Memory first, once, from a trimmed heap: RSS growth over the call.
    malloc_trim()
    reset_hwm()
    base = rss_now_bytes()
    out = pb.hvp(single) if k == 1 else pb.hvp_batched(vs)
    hwm = rss_hwm_bytes()
    peak = hwm - base if hwm is not None and base is not None else None
    err = rel_err([o[0] for o in out], pb.hvp(single)) if k > 1 else None
    del out
    fn = (lambda: pb.hvp(single)) if k == 1 else (lambda: pb.hvp_batched(vs))
    best, attempts, clean = timed_call(fn, a)
    return {"width": k, "images": int(pb.x.shape[0]), "seconds_per_call": best, "seconds_per_product": best / k,
            "clean": clean, "attempts": attempts, "peak_extra_rss_bytes": peak, "rel_err_vs_single": err}


def show(r):
    print("profile: {} {:>3} images width {:>2}: {:.3f} s per product{}, +{:.2f} GB{}".format(
        r["dtype"], r["images"], r["width"], r["seconds_per_product"], "" if r["clean"] else " (NOISY)",
        (r["peak_extra_rss_bytes"] or 0) / 1e9,
        "" if r["rel_err_vs_single"] is None else ", rel err vs single {:.1e}".format(r["rel_err_vs_single"])),
        flush=True)


def run_profile(a, rec):
    widths = [int(w) for w in a.profile_widths.split(",") if w]
    counts = [int(c) for c in a.profile_counts.split(",") if c]
    torch.set_num_threads(a.profile_threads)
    rec["threads"] = torch.get_num_threads()
    prof = {"threads": a.profile_threads, "quiet_below_foreign_cores": QUIET,
            "method_batched": "functorch.vmap over torch.autograd.grad of the kept gradient (grad_outputs "
                              "batched; the batching dhess does in C++)",
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
            "runs": [], "op_profiles": []}
    rec["hvp_profile"] = prof
    for dname in a.profile_dtypes.split(","):
        dtype = getattr(torch, dname)
        # Width 1 by image count: the cost of one product on a shard of that many images.
        for c in counts:
            pb = Problem(a.model, a.data, dtype, images=c)
            m = Meter()
            pb.build_graph()
            g = m.stop()
            r = measure(pb, 1, a)
            r.update({"dtype": dname, "sweep": "images", "graph_seconds": g["seconds"],
                      "graph_peak_rss_bytes": g["peak_rss_bytes"]})
            prof["runs"].append(r)
            show(r)
            if c == a.profile_op_images:
                wait_quiet(a.profile_wait_quiet)
                op = profile_ops(lambda: pb.hvp(pb.randn()), a.profile_top)
                op.update({"dtype": dname, "images": c, "width": 1})
                prof["op_profiles"].append(op)
            del pb
        # Batch widths on a subset (width 64 on all 200 images would need ~64x the activations).
        if widths:
            pb = Problem(a.model, a.data, dtype, images=a.profile_images)
            pb.build_graph()
            for k in widths:
                r = measure(pb, k, a)
                r.update({"dtype": dname, "sweep": "width"})
                prof["runs"].append(r)
                show(r)
                if k == a.profile_op_width:
                    vs = [torch.randn((k,) + tuple(p.shape)).to(dtype) for p in pb.params]
                    wait_quiet(a.profile_wait_quiet)
                    op = profile_ops(lambda: pb.hvp_batched(vs), a.profile_top)
                    op.update({"dtype": dname, "images": int(pb.x.shape[0]), "width": k})
                    prof["op_profiles"].append(op)
            del pb


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--json", required=True, help="output record")
    ap.add_argument("--top", type=int, default=1, help="top_n of eigenvalues() (0: skip)")
    ap.add_argument("--trace-probes", type=int, default=0, help="Hutchinson probes (0: skip)")
    ap.add_argument("--trace-rule", choices=["fixed", "pyhessian"], default="fixed",
                    help="fixed: exactly --trace-probes; pyhessian: PyHessian's stopping rule, at most that many")
    ap.add_argument("--slq-probes", type=int, default=0, help="n_v of density() (0: skip)")
    ap.add_argument("--slq-steps", type=int, default=100, help="iter of density()")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hvp-profile", action="store_true", help="time products by width and dtype instead")
    ap.add_argument("--profile-widths", default="1,4,16,64")
    ap.add_argument("--profile-dtypes", default="float32,float64")
    ap.add_argument("--profile-images", type=int, default=50, help="images for the width sweep")
    ap.add_argument("--profile-counts", default="25,50,100,200", help="image counts for the width-1 sweep")
    ap.add_argument("--profile-threads", type=int, default=1)
    ap.add_argument("--profile-repeats", type=int, default=2, help="clean timings wanted per point")
    ap.add_argument("--profile-attempts", type=int, default=4, help="timings tried per point at most")
    ap.add_argument("--profile-wait-quiet", type=float, default=120.0,
                    help="before each timing, wait at most this long for other work to stop")
    ap.add_argument("--profile-op-images", type=int, default=200, help="torch.profiler at width 1 on this many")
    ap.add_argument("--profile-op-width", type=int, default=16, help="and at this width on --profile-images")
    ap.add_argument("--profile-top", type=int, default=15)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    import functorch  # noqa: F401  (its version is recorded)
    rec = {"tool": "bench/pyhessian_peer.py", "pyhessian": PYHESSIAN, "command": sys.argv,
           "torch": torch.__version__, "threads": torch.get_num_threads(), "dtype": a.dtype,
           "model": os.path.abspath(a.model), "data": os.path.abspath(a.data), "seed": a.seed,
           "cores": os.cpu_count(), "loadavg_before": loadavg(), "phases": {}}
    total = Meter()
    if a.hvp_profile:
        run_profile(a, rec)
    else:
        run_algorithms(a, rec)
    t = total.stop()
    rec.update({"wall_seconds": t["seconds"], "cpu_seconds": t["cpu_seconds"], "foreign_cores": t["foreign_cores"],
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "loadavg_after": loadavg()})
    ph = rec["phases"]
    if "top1" in ph and "trace" in ph:
        rec["top1_plus_trace_seconds"] = ph["setup"]["seconds"] + ph["top1"]["seconds"] + ph["trace"]["seconds"]
    with open(a.json, "w") as f:
        json.dump(rec, f, indent=1)
    print("peer: wall {:.1f} s, peak RSS {:.2f} GB, foreign cores {:.2f}, loadavg {} -> {}; wrote {}".format(
        t["seconds"], rec["peak_rss_bytes"] / 1e9, t["foreign_cores"], " ".join(rec["loadavg_before"]),
        " ".join(rec["loadavg_after"]), a.json))


if __name__ == "__main__":
    main()
