"""dhess compile: a model's Hessian-vector product compiled ahead of time (AOTInductor), for `--compiled`.

The product of the loss's Hessian with k vectors at once, H·[v1 … vk], as a function of the
parameters, one micro-batch (inputs, targets, its weight in the whole data set's mean) and the vectors,
is traced by make_fx into aten ops -- through the TorchScript module itself, whose parameters are set to
the traced ones -- exported with torch.export and compiled by AOTInductor into a .pt2 package that every
rank of a dhess run loads with torch::inductor::AOTIModelPackageLoader. Reverse-over-reverse (the vjp of
the gradient) and forward-over-reverse (the jvp of the gradient) are both compiled and timed on the data;
the faster of those whose product equals plain autograd's is kept. The shapes are fixed: one package per micro-batch size that a run of `ranks` ranks and
`batch_size` makes (dhess uses the eager product, saying so, on any other).

    python -m dhess.compile --model model.pt --data data.pt --loss cross_entropy --width 64 --out prod/
    dhess --model model.pt --data data.pt --compiled prod/ ...

A package runs on the device it was compiled for (--device: a GPU, Triton kernels, where torch sees one,
else the CPU, vectorized C++ -- as dhess's own --device auto): a run on the other kind takes the eager
product and says why.

Without --out the packages go to a cache (DHESS_CACHE, else ~/.cache/dhess) keyed by the model file's
hash, the data's shapes, the loss, dtype, device, width, parameters, split and torch version; the
directory is printed, and reused when it is there.
"""
import argparse
import hashlib
import json
import os
import re
import sys
import time
import warnings

import torch
import torch.nn.functional as F

from .errors import DhessError

FORMAT = "1"
METHODS = ("reverse-over-reverse", "forward-over-reverse")


def file_hash(path):
    """The model file's SHA-256: the cache's key (the run checks a package by its product, not its hash)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def micro_batch_sizes(samples, ranks, batch_size):
    """The sample counts of the micro-batches dhess makes: `ranks` contiguous shards
    [N r / R, N (r+1) / R), each in pieces of `batch_size` (src/torch/data.cpp)."""
    sizes = set()
    for r in range(ranks):
        begin, end = samples * r // ranks, samples * (r + 1) // ranks
        step = batch_size or max(end - begin, 1)
        for s in range(begin, end, step):
            sizes.add(min(step, end - s))
    return sorted(sizes)


class Product:
    """The TorchScript model as a function of its selected parameters, and the loss dhess takes of it."""

    def __init__(self, model_path, loss, dtype, params_regex, train_mode, device="cpu"):
        # After its profiling runs TorchScript's executor differentiates its own rewritten graph, whose
        # nodes take detached inputs: a trace through it lost BatchNorm's dependence on its input and
        # weight (the product 0.5-1.0 off, relative, on the zoo's resblock). dhess runs the graph as
        # written (src/torch/problem.cpp), and so does the trace.
        torch._C._set_graph_executor_optimize(False)
        self.arguments = (model_path, loss, params_regex, train_mode, device)
        self.module = torch.jit.load(model_path, map_location=device).to(dtype)
        self.module.train(train_mode)
        self.loss = loss
        self.names, self.tensors = self._selected(params_regex)
        self.arity = len(self.module.forward.schema.arguments) - 1

    def _selected(self, regex):
        """Each parameter tensor once (a tied weight under its first name), those whose name matches
        --params, in the order of named_parameters(): dhess's layout order."""
        names, tensors, seen = [], [], set()
        for name, t in self.module.named_parameters():
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
            if key in seen:
                continue
            seen.add(key)
            if regex is None or re.search(regex, name):
                names.append(name)
                tensors.append(t.detach().clone())
        if not names:
            raise DhessError(f"--params {regex!r} matches no parameter of the model")
        return names, tensors

    def widened(self):
        """The same model in float64: the reference of a float32 product."""
        model_path, loss, params_regex, train_mode, device = self.arguments
        return Product(model_path, loss, torch.float64, params_regex, train_mode, device)

    def set(self, tensors):
        for name, t in zip(self.names, tensors):
            *path, leaf = name.split(".")
            owner = self.module
            for part in path:
                owner = getattr(owner, part)
            owner._c.setattr(leaf, t)

    def value(self, params, inputs, targets, weight):
        """The micro-batch's weighted mean loss, as dhess's loss.cpp takes it."""
        self.set(params)
        args = list(inputs)
        if self.loss == "none" and targets is not None and len(args) < self.arity:
            args.append(targets)
        y = self.module(*args)
        if self.loss == "none":
            value = y.reshape(())
        elif self.loss == "cross_entropy":
            value = F.cross_entropy(y, targets)
        elif self.loss == "nll":
            value = F.nll_loss(y, targets)
        elif self.loss == "mse":
            value = F.mse_loss(y, targets)
        else:
            value = F.binary_cross_entropy_with_logits(y, targets)
        return value * weight

    def function(self, method):
        """(params, inputs, targets, weight, vectors) -> H·v per parameter, each [k, *shape]."""
        def gradient(params, inputs, targets, weight):
            return torch.func.grad(self.value)(params, inputs, targets, weight)

        def reverse_over_reverse(params, inputs, targets, weight, vectors):
            _, vjp = torch.func.vjp(lambda p: gradient(p, inputs, targets, weight), params)
            return torch.func.vmap(lambda v: vjp(v)[0])(vectors)

        def forward_over_reverse(params, inputs, targets, weight, vectors):
            def along(v):
                return torch.func.jvp(lambda p: gradient(p, inputs, targets, weight), (params,), (v,))[1]
            return torch.func.vmap(along)(vectors)

        return reverse_over_reverse if method == METHODS[0] else forward_over_reverse

    def reference(self, params, inputs, targets, weight, vectors):
        """H·v for the first vector by plain autograd (the gradient with its graph, then its vjp), as
        dhess's eager product takes it: the check of every compiled product, independent of
        torch.func's transforms and of the trace."""
        leaves = [t.clone().requires_grad_(True) for t in params]
        try:
            with math_attention():
                value = self.value(leaves, inputs, targets, weight)
                grads = torch.autograd.grad(value, leaves, create_graph=True, allow_unused=True)
                used = [(g, v[0]) for g, v in zip(grads, vectors) if g is not None and g.requires_grad]
                hv = torch.autograd.grad([g for g, _ in used], leaves, [v for _, v in used], allow_unused=True)
        finally:
            self.set(self.tensors)
        return [torch.zeros_like(t) if h is None else h for h, t in zip(hv, leaves)]


def load_samples(path, loss, dtype, device="cpu"):
    """(inputs, targets) as dhess reads and converts them (src/torch/data.cpp), on `device`."""
    data = torch.load(path, map_location=device)
    if isinstance(data, dict):
        inputs, targets = data["inputs"], data.get("targets")
    else:
        inputs, targets = data
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    inputs = tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)
    if targets is not None:
        classes = loss in ("cross_entropy", "nll")
        if classes and not targets.is_floating_point():
            targets = targets.long()
        elif targets.is_floating_point() or loss != "none":
            targets = targets.to(dtype)
    return inputs, targets


def math_attention():
    """scaled_dot_product_attention's fused kernels have no second derivative; dhess's eager product
    takes the math kernel (src/torch/problem.cpp), and so does the trace."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.MATH])


def error_line(e):
    """The line of an exception that names the cause: TorchScript's messages open with a generic line
    and a traceback, and end with the Python error ("RuntimeError: ..."), as dhess's own messages take it."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[A-Za-z_.]+(Error|Exception): ", line)]
    marked = [lines[i - 1] for i, line in enumerate(lines) if "<--- HERE" in line and i >= 1]
    if marked and not named:  # the interpreter's own failure: name the line of the model's code
        return (f"{type(e).__name__} in the TorchScript code at `{marked[-1]}` (a traced model that computes "
                "sizes from tensors, int(tensor), cannot be traced again: export it with torch.jit.script)")
    return named[-1] if named else f"{type(e).__name__}: {lines[0] if lines else ''}"


def fastest(run, repeats=3):
    """The shortest of `repeats` calls, each waited for on a GPU (whose kernels run asynchronously)."""
    def synchronize():
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        run()
        synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def describe(t):
    return {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}


def compile_one(product, method, args, path, metadata):
    """Traces, exports and compiles one product; returns the loaded package and the seconds it took."""
    from torch.fx.experimental.proxy_tensor import make_fx

    start = time.perf_counter()
    try:
        with math_attention():
            graph = make_fx(product.function(method))(*args)
    finally:
        product.set(product.tensors)  # the trace left its own tensors in the module
    program = torch.export.export(graph, args)
    torch._inductor.aoti_compile_and_package(program, package_path=path,
                                             inductor_configs={"aot_inductor.metadata": metadata})
    return torch._inductor.aoti_load_package(path), time.perf_counter() - start


def relative_error(got, want):
    """Of the first vector's product `got` (each [k, *shape]) against `want` (each [*shape])."""
    scale = max(float(w.abs().max()) for w in want)
    return max(float((g[0].double() - w.double()).abs().max()) for g, w in zip(got, want)) / max(scale, 1e-300)


def widen(value):
    if isinstance(value, torch.Tensor):
        return value.double() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(widen(v) for v in value)
    return value


def reference_of(product, args):
    """The first vector's exact product and the error a compiled one may have: in float64, plain
    autograd's and 1e-12 (relative to its largest entry); in float32, plain autograd's in float64 and
    4 times the float32 eager product's own error against it (at least 1e-6; both round)."""
    reference = product.reference(*args)
    if product.tensors[0].dtype == torch.float64:
        return reference, 1e-12
    exact = product.widened().reference(*widen(args))
    return exact, max(4 * relative_error([r.unsqueeze(0) for r in reference], exact), 1e-6)


def compile_for_size(product, samples_inputs, samples_targets, size, width, methods, out, base_metadata):
    """The packages of one micro-batch size; keeps the faster exact method's as product-SIZE.pt2."""
    inputs = tuple(t[:size].contiguous() for t in samples_inputs)
    targets = None if samples_targets is None else samples_targets[:size].contiguous()
    dtype, device = product.tensors[0].dtype, product.tensors[0].device
    weight = torch.tensor(1.0, dtype=dtype, device=device)
    generator = torch.Generator().manual_seed(0)
    vectors = [torch.randn((width,) + tuple(t.shape), dtype=dtype, generator=generator).to(device)
               for t in product.tensors]
    args = (product.tensors, inputs, targets, weight, vectors)
    metadata = dict(base_metadata, **{
        "dhess.inputs": json.dumps([describe(t) for t in inputs]),
        "dhess.targets": json.dumps(None if targets is None else describe(targets))})
    reference, tolerance = reference_of(product, args)
    records = []
    for method in methods:
        eager_fn = product.function(method)
        try:
            with math_attention():
                eager = eager_fn(*args)
                eager_seconds = fastest(lambda: eager_fn(*args))
            path = os.path.join(out, f"product-{size}.{method}.pt2")
            compiled, compile_seconds = compile_one(product, method, args,
                                                    path, dict(metadata, **{"dhess.method": method}))
            got = compiled(*args)
            compiled_seconds = fastest(lambda: compiled(*args))
        except Exception as e:  # forward-mode rules are missing for some ops (nll_loss_backward)
            records.append({"method": method, "failed": error_line(e)})
            continue
        records.append({"method": method, "path": path, "compile_seconds": compile_seconds,
                        "eager_seconds_per_vector": eager_seconds / width,
                        "compiled_seconds_per_vector": compiled_seconds / width,
                        "relative_error": relative_error(got, reference),
                        "eager_relative_error": relative_error(eager, reference)})
    for r in records:
        if "path" in r and r["relative_error"] > tolerance:  # never keep a package that is not exact
            os.remove(r.pop("path"))
            r["failed"] = f"its product differs from autograd's by {r['relative_error']:.2g} (relative)"
    done = [r for r in records if "path" in r]
    if not done:
        raise DhessError("the product could not be compiled exactly: " +
                         "; ".join(f"{r['method']}: {r['failed']}" for r in records))
    best = min(done, key=lambda r: r["compiled_seconds_per_vector"])
    for r in done:
        if r is not best:
            os.remove(r.pop("path"))
    os.replace(best["path"], os.path.join(out, f"product-{size}.pt2"))
    best["path"] = os.path.join(out, f"product-{size}.pt2")
    return {"samples": size, "kept": best["method"], "tolerance": tolerance, "methods": records}


def cache_key(model_hash, inputs, targets, options):
    text = json.dumps({"model": model_hash, "inputs": [describe(t) for t in inputs],
                       "targets": None if targets is None else describe(targets), "torch": torch.__version__,
                       **options}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_root():
    return os.environ.get("DHESS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dhess")


def resolve_device(device):
    """auto: the GPU where torch sees one (as dhess --device auto), else the CPU; cuda:N is cuda (a
    package runs on whichever GPU a rank has)."""
    device = "cuda" if device.startswith("cuda") else device
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DhessError(f"--device cuda: this torch ({torch.__version__}, CUDA {torch.version.cuda}) sees no GPU; "
                         "compile on a GPU node, or --device cpu for CPU runs")
    return device


def compile_product(model, data, loss, *, width=64, dtype="float64", params=None, ranks=1, batch_size=None,
                    train_mode=False, method="auto", out=None, force=False, threads=None, device="auto",
                    echo=print):
    """Compiles the product for the micro-batches a run of `ranks` ranks makes; returns the directory
    that `dhess --compiled` takes (a cached one is reused)."""
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device)
    torch_dtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
    inputs, targets = load_samples(data, loss, torch_dtype, device) if data else ((), None)
    model_hash = file_hash(model)
    options = {"loss": loss, "dtype": dtype, "device": device, "width": width, "params": params, "ranks": ranks,
               "batch_size": batch_size, "train_mode": train_mode, "method": method}
    if out is None:
        out = os.path.join(cache_root(), "compiled", cache_key(model_hash, inputs, targets, options))
        if os.path.exists(os.path.join(out, "compile.json")) and not force:
            echo(f"dhess compile: cached {out}")
            return out
    elif os.path.exists(os.path.join(out, "compile.json")) and not force:
        raise DhessError(f"{out} already holds a compiled product (compile.json); give --force to replace it")
    os.makedirs(out, exist_ok=True)
    product = Product(model, loss, torch_dtype, params, train_mode, device)
    samples = inputs[0].shape[0] if inputs else 0
    sizes = micro_batch_sizes(samples, ranks, batch_size) if inputs else [0]
    base = {"dhess.format": FORMAT, "dhess.model_hash": model_hash, "dhess.loss": loss, "dhess.dtype": dtype,
            "dhess.curvature": "hessian", "dhess.width": str(width), "dhess.torch": torch.__version__,
            "dhess.train_mode": str(int(train_mode)),
            "dhess.parameters": json.dumps([[n, list(t.shape)] for n, t in zip(product.names, product.tensors)])}
    methods = METHODS if method == "auto" else (method,)
    record = {"model": model, "model_hash": model_hash, "torch": torch.__version__, "threads": torch.get_num_threads(),
              **options, "n": sum(t.numel() for t in product.tensors), "packages": []}
    for size in sizes:
        echo(f"dhess compile: {len(methods)} product(s) of width {width} on {size} samples ...")
        packaged = compile_for_size(product, inputs, targets, size, width, methods, out, base)
        record["packages"].append(packaged)
        kept = next(m for m in packaged["methods"] if m["method"] == packaged["kept"])
        echo(f"dhess compile: kept {packaged['kept']} ({kept['compiled_seconds_per_vector'] * 1e3:.3g} ms per vector "
             f"compiled, {kept['eager_seconds_per_vector'] * 1e3:.3g} eager; compiled in "
             f"{kept['compile_seconds']:.1f} s; relative difference {kept['relative_error']:.1e})")
    with open(os.path.join(out, "compile.json"), "w") as f:
        json.dump(record, f, indent=1)
    echo(f"dhess compile: wrote {out}")
    return out


class UsageParser(argparse.ArgumentParser):
    """Bad flags exit 64, as dhess's own (sysexits EX_USAGE), not argparse's 2."""

    def error(self, message):
        self.exit(64, f"dhess compile: error: {message}\n")


def main(argv=None):
    ap = UsageParser(prog="dhess compile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="TorchScript file (as dhess --model)")
    ap.add_argument("--data", default="", help="torch.save file (as dhess --data)")
    ap.add_argument("--loss", default="cross_entropy",
                    choices=["cross_entropy", "mse", "nll", "bce_with_logits", "none"])
    ap.add_argument("--width", type=int, default=64,
                    help="vectors per product: dhess's panel (dense path) or its block of vectors (default 64)")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--params", default=None, help="regex on parameter names (as dhess --params)")
    ap.add_argument("--ranks", type=int, default=1,
                    help="ranks of the dhess spectrum run, whose data shards they are (the dense path: 1)")
    ap.add_argument("--batch-size", type=int, default=None, help="as dhess --batch-size")
    ap.add_argument("--train-mode", action="store_true")
    ap.add_argument("--method", default="auto", choices=("auto",) + METHODS)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for compiling and timing")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="where the package runs: cuda (Triton kernels), cpu, or auto: cuda where torch sees a GPU")
    ap.add_argument("--out", default=None, help="directory of the packages (default: the cache)")
    ap.add_argument("--force", action="store_true", help="replace a compiled product in --out")
    a = ap.parse_args(argv)
    if a.width < 1 or a.ranks < 1 or (a.batch_size is not None and a.batch_size < 1):
        ap.error("--width, --ranks and --batch-size must be positive")
    for flag, path in (("--model", a.model), ("--data", a.data)):
        if path and not os.path.isfile(path):
            print(f"dhess compile: error: {flag} '{path}' is not a file", file=sys.stderr)
            return 65
    warnings.filterwarnings("ignore")
    try:
        compile_product(a.model, a.data, a.loss, width=a.width, dtype=a.dtype, params=a.params, ranks=a.ranks,
                        batch_size=a.batch_size, train_mode=a.train_mode, method=a.method, out=a.out,
                        force=a.force, threads=a.threads, device=a.device)
    except DhessError as e:
        print(f"dhess compile: error: {e}", file=sys.stderr)
        return 65
    return 0


if __name__ == "__main__":
    sys.exit(main())
