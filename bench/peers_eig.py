"""numpy.linalg.eigvalsh / eigh on the matrix dhess eigendecomposed.

usage: peers_eig.py MATRIX(.npy | .h5:/dataset) {eigvalsh|eigh} out.json [dhess eigenvalues.npy]
Set OPENBLAS_NUM_THREADS before starting (numpy reads it at import).
"""
import json
import os
import resource
import sys
import time

import numpy as np


def load(spec):
    if spec.endswith(".npy"):
        return np.load(spec)
    import h5py
    path, name = spec.split(".h5:")
    with h5py.File(path + ".h5", "r") as f:
        return np.asarray(f[name][...])


def main():
    spec, routine, out = sys.argv[1:4]
    a = load(spec)
    a = (a + a.T) / 2 if not spec.endswith(".npy") else a  # dhess symmetrizes H the same way
    n = a.shape[0]
    t0 = time.perf_counter()
    if routine == "eigvalsh":
        w = np.linalg.eigvalsh(a)
    else:
        w, v = np.linalg.eigh(a)
    dt = time.perf_counter() - t0
    rec = {"routine": "numpy.linalg." + routine, "n": n, "seconds": dt,
           "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
           "gflops": (4.0 if routine == "eigvalsh" else 10.0) / 3.0 * n ** 3 / dt / 1e9,
           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if len(sys.argv) > 4 and os.path.exists(sys.argv[4]):
        ref = np.load(sys.argv[4])
        rec["max_abs_diff_relative_to_dhess"] = float(np.abs(np.sort(w) - ref).max() / np.abs(ref).max())
    with open(out, "w") as f:
        json.dump(rec, f, indent=1)
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
