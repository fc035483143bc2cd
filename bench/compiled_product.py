"""Does an ahead-of-time compiled Hessian-vector product pay? (issue 24, item 1)

On a dhess built-in convnet (exported with `dhess export`), the k-wide batched product of the loss's
Hessian with the first k unit vectors, both ways (forward-over-reverse: vmap over jvp of grad;
reverse-over-reverse: vmap over the vjp of grad), eager torch.func against the same function traced by
make_fx into aten ops, exported with torch.export and compiled by AOTInductor into a .pt2 package,
loaded with torch._inductor.aoti_load_package (the Python face of the AOTIModelPackageLoader a C++
rank would use). Float64, torch.set_num_threads(T). Records per method: seconds per column (fastest of
--repeats), compile seconds, and the compiled product's largest error relative to the eager one.
"""
import argparse
import json
import os
import resource
import tempfile
import time
import warnings

import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

warnings.filterwarnings("ignore")


def load(model_path, data_path):
    scripted = torch.jit.load(model_path)
    params = {n: p.detach().double() for n, p in scripted.named_parameters()}
    x, y = torch.load(data_path)
    return params, x.double(), y


def loss_of(params, x, y):
    """dhess's builtin:convnet: Conv2d(1,32,3,1,1) -> flatten -> Linear(32 HW HW, 5), mean cross-entropy
    (written out: forward-over-reverse has no rule for nll_loss_backward)."""
    names = list(params)
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]

    def f(theta):
        w1, b1, w2, b2 = (t.reshape(s) for t, s in zip(torch.split(theta, sizes), shapes))
        z = F.linear(torch.flatten(torch.conv2d(x, w1, b1, 1, 1), 1), w2, b2)
        return (torch.logsumexp(z, 1) - z.gather(1, y.unsqueeze(1)).squeeze(1)).mean()

    return f, torch.cat([params[n].reshape(-1) for n in names])


def products(f):
    def forward_over_reverse(theta, V):
        return torch.func.vmap(lambda v: torch.func.jvp(torch.func.grad(f), (theta,), (v,))[1])(V)

    def reverse_over_reverse(theta, V):
        _, vjp = torch.func.vjp(torch.func.grad(f), theta)
        return torch.func.vmap(lambda v: vjp(v)[0])(V)

    return {"forward-over-reverse": forward_over_reverse, "reverse-over-reverse": reverse_over_reverse}


def fastest(run, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def compile_product(fn, theta, V, path):
    start = time.perf_counter()
    graph = make_fx(fn)(theta, V)
    program = torch.export.export(graph, (theta, V))
    torch._inductor.aoti_compile_and_package(program, package_path=path)
    return torch._inductor.aoti_load_package(path), time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    f, theta = loss_of(*load(a.model, a.data))
    n = theta.numel()
    V = torch.zeros(a.width, n, dtype=torch.float64)
    V[torch.arange(a.width), torch.arange(a.width)] = 1
    records = []
    with tempfile.TemporaryDirectory() as work:
        for name, fn in products(f).items():
            eager = fn(theta, V)
            compiled, compile_seconds = compile_product(fn, theta, V, os.path.join(work, name + ".pt2"))
            got = compiled(theta, V)
            got = got[0] if isinstance(got, (list, tuple)) else got
            eager_seconds = fastest(lambda: fn(theta, V), a.repeats)
            compiled_seconds = fastest(lambda: compiled(theta, V), a.repeats)
            records.append({"method": name, "n": n, "width": a.width, "threads": a.threads,
                            "eager_seconds_per_column": eager_seconds / a.width,
                            "compiled_seconds_per_column": compiled_seconds / a.width,
                            "compiled_over_eager": compiled_seconds / eager_seconds,
                            "compile_seconds": compile_seconds,
                            "max_relative_error": float((got - eager).abs().max() / eager.abs().max()),
                            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                            "torch": torch.__version__})
            print(json.dumps(records[-1]), flush=True)
    with open(a.out, "w") as out:
        json.dump(records, out, indent=1)


if __name__ == "__main__":
    main()
