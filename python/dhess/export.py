"""Writes a Python model and its data as the files dhess reads: TorchScript and torch.save."""
import contextlib
import inspect
import warnings

import torch

from .errors import DhessError


def as_tuple(inputs):
    """The forward() arguments as a tuple: dhess passes the elements of a tuple as separate arguments."""
    if inputs is None:
        return ()
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    return tuple(inputs)


def save_model(model, path, *, inputs, targets, loss, train_mode):
    """Saves `model` as TorchScript in the mode dhess will run it in (eval unless `train_mode`),
    leaving the caller's module in the mode it was in."""
    if isinstance(model, torch.jit.ScriptModule):
        model.save(path)
        return
    was_training = model.training
    model.train(train_mode)
    try:
        scripted = _script_or_trace(model, _example_args(model, inputs, targets, loss))
    finally:
        model.train(was_training)
    scripted.save(path)


def _script_or_trace(model, example_args):
    """torch.jit.script keeps data-dependent control flow; trace is the fallback for models script
    cannot compile (varargs, unsupported Python), and records only the path these inputs take."""
    name = type(model).__name__
    try:
        return torch.jit.script(model)
    except Exception as script_error:
        try:
            with _without_fused_attention():
                traced = torch.jit.trace(model, example_args)
        except Exception as trace_error:
            raise DhessError(f"cannot export model {name} to TorchScript: torch.jit.script failed "
                             f"({_first_line(script_error)}) and torch.jit.trace on the inputs failed "
                             f"({_first_line(trace_error)})") from trace_error
        warnings.warn(f"model {name} could not be scripted ({_first_line(script_error)}); it was traced on the "
                      "given inputs, so Python control flow that depends on the data is frozen", stacklevel=6)
        return traced


@contextlib.contextmanager
def _without_fused_attention():
    """An eval-mode Transformer layer or MultiheadAttention takes a fused fast path whenever no
    gradient is needed (as in the trace checker's run): ops that autograd cannot differentiate at
    all. Traced without it, the graph holds the ops the model's training would differentiate."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def _first_line(error):
    """The first non-empty line of an exception: TorchScript's messages run to dozens of lines."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _example_args(model, inputs, targets, loss):
    """The arguments dhess will call forward() with: with loss 'none', the targets go last when
    forward takes one argument more than the inputs."""
    args = as_tuple(inputs)
    if loss == "none" and targets is not None and _positional_arity(model) > len(args):
        args += (targets,)
    return args


def _positional_arity(model):
    """How many positional arguments forward() takes (varargs count as unlimited)."""
    kinds = [p.kind for p in inspect.signature(model.forward).parameters.values()]
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return float("inf")
    return sum(k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in kinds)


def save_data(path, inputs, targets):
    """torch.save((inputs, targets)), on the CPU and detached: dhess loads them without autograd
    history, on its own device. Without targets (loss 'none') the dict form, which may omit them."""
    inputs = _portable(inputs)
    if targets is None:
        torch.save({"inputs": inputs}, path)
    else:
        torch.save((inputs, _portable(targets)), path)


def _portable(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return tuple(_portable(v) for v in value)
