"""A finished dhess run read back: eigenpairs, the Hessian and its blocks, in torch's terms."""
import json
import shutil
import weakref
from pathlib import Path
from typing import NamedTuple, Tuple

import h5py
import numpy as np
import torch

from .errors import DhessError


class Block(NamedTuple):
    """One block of --blocks (blocks=... in Python): its parameters, size, trace (exact, or estimated
    with trace_stderr), its share of the whole trace, and its largest eigenvalues, descending."""
    name: str
    parameters: Tuple[str, ...]
    n: int
    trace: float
    trace_exact: bool
    trace_stderr: float
    trace_share: float
    top: Tuple[float, ...]


class Parameter(NamedTuple):
    """Where one parameter tensor lives in the flattened vector (C order). `aliases` are the other
    names of a tied tensor (e.g. a decoder weight that is the embedding weight): it appears once."""
    name: str
    shape: Tuple[int, ...]
    offset: int
    size: int
    aliases: Tuple[str, ...]
    requires_grad: bool = True  # False: frozen in the model, in H all the same


def load(out_dir):
    """The Result of a finished run in `out_dir` (a SLURM job's --out, say). dhess writes
    summary.json last, so a directory without it holds no finished result."""
    path = Path(out_dir)
    if not path.is_dir():
        raise DhessError(f"'{out_dir}' is not a directory")
    if not (path / "summary.json").is_file():
        raise DhessError(f"'{out_dir}' holds no finished dhess result: summary.json is missing (dhess writes it "
                         "last, so the run failed, was interrupted, or is still running)")
    return Result(path)


class Result:
    """The files of one dhess run. Large arrays stay in their HDF5 files until asked for.

    With `temporary`, the directory belongs to this Result and is removed by close() (or when the
    Result is garbage collected). A context manager: `with dhess.hessian(...) as r:`.
    """

    def __init__(self, path, temporary=False):
        self.path = Path(path)
        self.summary = json.loads((self.path / "summary.json").read_text())
        self.layout = _read_layout(self.path / "layout.json")
        self._names = {alias: p for p in self.layout.values() for alias in (p.name,) + p.aliases}
        self._files = {}
        self._removal = weakref.finalize(self, shutil.rmtree, self.path, True) if temporary else None

    @property
    def n(self):
        """The number of parameters: H is n × n."""
        return sum(p.size for p in self.layout.values())

    @property
    def eigenvalues(self):
        """All computed eigenvalues, ascending (numpy float64)."""
        self._require("eigenvalues.npy", "this run computed no eigenvalues (eigen='none', or spectrum() with "
                                         "top=0 and bottom=0); ask for eigen='values', 'all', 'top:K' or 'bottom:K'")
        return np.load(self.path / "eigenvalues.npy")

    @property
    def eigenvectors(self):
        """The n × m h5py dataset of eigenvectors; column i belongs to eigenvalues[i]. Slice it to read."""
        self._require("eigenvectors.h5", "this run computed no eigenvectors; ask for eigen='all', 'top:K' or "
                                         "'bottom:K' (eigen='values' computes values only)")
        return self._dataset("eigenvectors.h5", "eigenvectors")

    def hessian(self):
        """The whole n × n Hessian as one numpy array, rows and columns in layout order."""
        return self._hessian()[:]

    def block(self, a, b):
        """The block of H for parameters `a` and `b` (names or aliases), shaped shape(a) + shape(b)
        like torch.autograd.functional.hessian's nested blocks; only this block is read from disk."""
        pa, pb = self.parameter(a), self.parameter(b)
        rows = slice(pa.offset, pa.offset + pa.size)
        cols = slice(pb.offset, pb.offset + pb.size)
        return self._hessian()[rows, cols].reshape(pa.shape + pb.shape)

    def as_torch(self):
        """H as torch.autograd.functional.hessian(f, tuple(model.parameters())) returns it: a tuple
        (one per parameter) of tuples (one per parameter) of blocks shaped shape(i) + shape(j).
        Tied tensors appear once, as in model.parameters(). Blocks keep hessian.h5's dtype (float64
        unless the run used dtype='float32')."""
        params = list(self.layout.values())
        return tuple(tuple(torch.from_numpy(self.block(a.name, b.name)) for b in params) for a in params)

    def eigenvector(self, i):
        """Eigenvector i (column i of eigenvectors, negative i from the end) as a dict name → array
        in that parameter's shape, in layout order."""
        vectors = self.eigenvectors
        column = vectors[:, range(vectors.shape[1])[i]]
        return {p.name: column[p.offset:p.offset + p.size].reshape(p.shape) for p in self.layout.values()}

    @property
    def shares(self):
        """m × (number of parameters): the share of eigenvector i's squared norm in each parameter
        tensor (columns in layout order; rows sum to 1). From eigenvector_shares.npy when dhess
        wrote it, else computed from the eigenvectors (the matrix-free path)."""
        if (self.path / "eigenvector_shares.npy").is_file():
            return np.load(self.path / "eigenvector_shares.npy")
        squares = self.eigenvectors[:] ** 2
        per_parameter = [squares[p.offset:p.offset + p.size].sum(axis=0) for p in self.layout.values()]
        return np.stack(per_parameter, axis=1) / squares.sum(axis=0)[:, None]

    @property
    def diagonal(self):
        """The Hessian's diagonal (dhess spectrum's diagonal.npy, exact or estimated: see
        summary["diagonal"]["mode"]) as a dict name → array in that parameter's shape."""
        self._require("diagonal.npy", "only dhess spectrum writes the diagonal (diagonal='exact' or 'hutchinson')")
        flat = np.load(self.path / "diagonal.npy")
        return {p.name: flat[p.offset:p.offset + p.size].reshape(p.shape) for p in self.layout.values()}

    @property
    def curvature(self):
        """Which matrix the run computed: 'hessian', 'ggn' (generalized Gauss-Newton) or 'ef'
        (empirical Fisher). hessian(), block(), as_torch() and the eigenpairs are of that matrix."""
        return self.summary["model"].get("curvature", "hessian")

    @property
    def log_determinants(self):
        """{prior precision delta: log det(C + delta I)} from the run's --prior-precision list (None
        where C + delta I is not positive definite), C the run's curvature of the mean loss."""
        if "log_determinants" not in self.summary:
            raise DhessError("this run computed no log-determinants; give prior_precision=[...] "
                             "(dhess --prior-precision D1,D2) with eigen='values' or 'all'")
        return {v["prior_precision"]: v["log_det"] for v in self.summary["log_determinants"]["values"]}

    def log_det(self, prior_precision):
        """log det(C + prior_precision · I) for one of the run's prior precisions."""
        table = self.log_determinants
        if prior_precision not in table:
            raise KeyError(f"prior precision {prior_precision} was not computed; the run has {sorted(table)}")
        if table[prior_precision] is None:
            raise DhessError(f"C + {prior_precision} I is not positive definite: no log-determinant")
        return table[prior_precision]

    @property
    def blocks(self):
        """{name: Block} from --blocks (blocks=... in Python), in the order dhess reported them."""
        if "blocks" not in self.summary:
            raise DhessError("this run computed no per-block curvature; give blocks='tensors', 'modules' or "
                             "'NAME=REGEX;...' (dhess --blocks)")
        return {b["name"]: Block(b["name"], tuple(b["parameters"]), b["n"], b["trace"], b["trace_exact"],
                                 b.get("trace_stderr", 0.0), b["trace_share"], tuple(b["top"]))
                for b in self.summary["blocks"]}

    def plot(self, path):
        """Writes dhess's spectrum figure (PNG: the spectral density, extreme eigenvalues marked) to `path`."""
        self._require("spectrum.png", "dhess draws it only when it computed eigenvalues or a density, and "
                                      "only where matplotlib imports (see the run's warnings)")
        shutil.copyfile(self.path / "spectrum.png", path)
        return Path(path)

    def parameter(self, name):
        """The Parameter called `name`, or whose tied tensor `name` is an alias of."""
        try:
            return self._names[name]
        except KeyError:
            raise KeyError(f"no parameter '{name}' in this result; it has {', '.join(self.layout)}") from None

    def close(self):
        """Closes the HDF5 files and removes the directory when it was temporary."""
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self._removal is not None:
            self._removal()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        have = [name for name in ("eigenvalues.npy", "eigenvectors.h5", "hessian.h5") if (self.path / name).is_file()]
        files = ", ".join(have) or "no matrices"
        return f"<dhess.Result '{self.path}': n = {self.n}, {len(self.layout)} parameters, {files}>"

    def _hessian(self):
        self._require("hessian.h5", "the run did not save the Hessian; use save_hessian=True (dhess --save-hessian)")
        return self._dataset("hessian.h5", "hessian")

    def _dataset(self, filename, name):
        if filename not in self._files:
            self._files[filename] = h5py.File(self.path / filename, "r")
        return self._files[filename][name]

    def _require(self, filename, reason):
        if not (self.path / filename).is_file():
            raise DhessError(f"'{self.path}' has no {filename}: {reason}")


def _read_layout(path):
    """layout.json as an ordered dict name → Parameter; results written before dhess reported tied
    parameters have no "aliases" key, which means none."""
    entries = json.loads(path.read_text())["parameters"]
    return {p["name"]: Parameter(p["name"], tuple(p["shape"]), p["offset"], p["size"], tuple(p.get("aliases", [])),
                                 p.get("requires_grad", True))
            for p in entries}
