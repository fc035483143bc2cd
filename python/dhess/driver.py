"""dhess.hessian() and dhess.spectrum(): export, run the executable, return the Result."""
import os
import shutil
import tempfile

from . import export, launch
from .result import Result

INPUT_FILES = ("model.pt", "data.pt")


def hessian(model, inputs, targets=None, loss="cross_entropy", *, eigen="none", ranks=1, out=None, params=None,
            batch_size=None, dtype="float64", save_hessian=True, train_mode=False, force=False, progress=True,
            curvature="hessian", blocks=None, prior_precision=None, compiled=False, extra_args=()):
    """The full Hessian of `loss` over all of `model`'s parameters (dhess's dense path), and the
    eigenpairs `eigen` asks for ('none', 'values', 'all', 'top:K', 'bottom:K'). `curvature="ggn"`
    gives the generalized Gauss-Newton matrix instead, `"ef"` the empirical Fisher: the same
    outputs, in the same layout. `blocks` ('tensors', 'modules', 'modules:2' or 'NAME=REGEX;...')
    adds each block's trace and largest eigenvalues (Result.blocks); `prior_precision` (a number or
    a list) the log-determinants log det(C + delta I) a Laplace approximation needs (Result.log_det).
    `compiled=True` runs the Hessian-vector product compiled ahead of time (dhess compile; cached).

    `inputs` is a tensor or a tuple of tensors (forward's arguments), None for a loss='none'
    model without data. `out` keeps the result (with the exported model.pt and data.pt) in that
    directory; None uses a temporary one that the Result removes when closed. `params` (a regex
    on parameter names), `batch_size`, `dtype`, `train_mode` and `force` are dhess's flags;
    `extra_args` adds any other (e.g. ["--solver", "pdsyevr"]). `progress` echoes dhess's lines.
    """
    flags = _flags(eigen=eigen, params=params, batch_size=batch_size, dtype=dtype, save_hessian=save_hessian,
                   train_mode=train_mode, force=force, curvature=curvature, blocks=blocks,
                   prior_precision=_list(prior_precision))
    return _drive([], model, inputs, targets, loss, ranks, out, flags + list(extra_args), progress,
                  compiled and {"width": 64, "ranks": 1})


def spectrum(model, inputs, targets=None, loss="cross_entropy", *, top=10, bottom=0, ranks=1, out=None, progress=True,
             compiled=False, extra_args=(), **flags):
    """The matrix-free path (dhess spectrum): the `top` largest and `bottom` smallest eigenpairs by
    Lanczos, for networks whose Hessian does not fit in memory. Other dhess spectrum flags go as
    keywords, underscores for dashes: slq_probes=12, diagonal="exact", params="^fc", train_mode=True,
    curvature="ggn". `compiled=True`: the product compiled ahead of time for these ranks' data shards.
    """
    options = _flags(top=top, bottom=bottom, **flags)
    return _drive(["spectrum"], model, inputs, targets, loss, ranks, out, options + list(extra_args), progress,
                  compiled and {"width": 1, "ranks": ranks})


def _list(values):
    """A number or a sequence of numbers as dhess's comma-separated list; None stays None."""
    if values is None:
        return None
    if isinstance(values, (int, float)):
        values = [values]
    return ",".join(repr(float(v)) for v in values)


def _flags(**values):
    """Keywords as dhess flags: True → `--name`, False/None → left out, anything else → `--name value`."""
    args = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not None and value is not False:
            args += [flag, str(value)]
    return args


def _drive(command, model, inputs, targets, loss, ranks, out, flags, progress, compiled=None):
    """Exports the inputs into a staging folder inside the output directory (so that ranks on
    other nodes see them when `out` is on a shared file system), runs dhess, and moves them beside
    the result once it is finished: a refused or failed run leaves an existing result untouched.
    `compiled` ({"width", "ranks"}): the product is compiled (or found in the cache) first."""
    if targets is None and loss != "none":
        raise ValueError(f"loss='{loss}' needs targets; only loss='none' (forward returns the loss) runs without")
    prefix = launch.launcher(ranks) + [launch.executable()] + command
    out_dir = out if out is not None else tempfile.mkdtemp(prefix="dhess-")
    os.makedirs(out_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".inputs-", dir=out_dir)
    try:
        files = _export(model, inputs, targets, loss, staging, "--train-mode" in flags)
        if compiled:
            flags = flags + ["--compiled", _compile(files, loss, flags, compiled, progress)]
        launch.run(prefix + files + ["--loss", loss] + flags + ["--out", out_dir], progress)
        for name in os.listdir(staging):
            os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
    except BaseException:
        if out is None:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Result(out_dir, temporary=out is None)


def _compile(files, loss, flags, compiled, progress):
    """The cached packages of this model, data and run (dhess compile)."""
    def value(name, default=None):
        return flags[flags.index(name) + 1] if name in flags else default

    from . import compile as compiler  # imported here: `python -m dhess.compile` runs it as __main__

    named = dict(zip(files[::2], files[1::2]))
    batch_size = value("--batch-size")
    return compiler.compile_product(
        named["--model"], named.get("--data", ""), loss, width=int(value("--panel", compiled["width"])),
        dtype=value("--dtype", "float64"), params=value("--params"), ranks=compiled["ranks"],
        batch_size=int(batch_size) if batch_size else None, train_mode="--train-mode" in flags,
        device=value("--device", "auto"), echo=print if progress else (lambda *_: None))


def _export(model, inputs, targets, loss, folder, train_mode):
    """Writes model.pt (and data.pt unless there are no inputs) and returns their dhess flags."""
    model_path, data_path = (os.path.join(folder, name) for name in INPUT_FILES)
    export.save_model(model, model_path, inputs=inputs, targets=targets, loss=loss, train_mode=train_mode)
    if inputs is None and targets is None:
        return ["--model", model_path]
    export.save_data(data_path, inputs, targets)
    return ["--model", model_path, "--data", data_path]
