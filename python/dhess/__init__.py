"""Drive the dhess executable from Python: the full Hessian of a network's loss with respect to
all its parameters, computed on MPI ranks, read back in torch's terms.

    import dhess
    with dhess.hessian(model, x, y, loss="cross_entropy", eigen="values") as r:
        H, w = r.hessian(), r.eigenvalues      # one n × n matrix (layout order), ascending eigenvalues
"""
from .driver import hessian, spectrum
from .errors import DhessError
from .result import Block, Parameter, Result, load

__all__ = ["hessian", "spectrum", "load", "Result", "Parameter", "Block", "DhessError"]
