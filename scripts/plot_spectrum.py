#!/usr/bin/env python3
"""Draws spectrum.png for dhess: the Hessian's spectral density on a log scale
with the extreme eigenvalues marked. From exact eigenvalues (dense path: a
histogram) or from a stochastic Lanczos quadrature density (matrix-free path).

  plot_spectrum.py --out PNG [--eigenvalues NPY] [--density CSV] [--extremes NPY] [--title TEXT]
"""
import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--eigenvalues")
    ap.add_argument("--density")
    ap.add_argument("--extremes")
    ap.add_argument("--title", default="Hessian spectrum")
    a = ap.parse_args()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    extremes = None
    if a.eigenvalues:
        w = np.load(a.eigenvalues)
        counts, edges = np.histogram(w, bins=min(200, max(10, w.size // 5)))
        width = np.diff(edges)
        density = counts / (w.size * width)
        ax.bar(edges[:-1], np.where(density > 0, density, np.nan), width=width, align="edge", color="tab:blue",
               alpha=0.7, label=f"exact eigenvalues (n = {w.size})")
        extremes = np.concatenate([w[:3], w[-3:]]) if w.size > 6 else w
    if a.density:
        d = np.loadtxt(a.density, delimiter=",", skiprows=1)
        ax.plot(d[:, 0], d[:, 1], color="tab:orange", label="stochastic Lanczos quadrature")
    if a.extremes:
        extremes = np.load(a.extremes)
    if extremes is not None:
        for i, v in enumerate(np.atleast_1d(extremes)):
            ax.axvline(v, color="tab:red", lw=0.8, ls="--", label="extreme eigenvalues" if i == 0 else None)
    ax.set_yscale("log")
    top = ax.get_ylim()[1]
    ax.set_ylim(bottom=max(ax.get_ylim()[0], top * 1e-8))  # deep Gaussian tails say nothing
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    ax.set_title(a.title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with open(a.out, "wb") as f:  # the caller names a staged file; keep matplotlib from choosing the format by suffix
        fig.savefig(f, format="png")


if __name__ == "__main__":
    main()
