#!/usr/bin/env python3
"""Matrix-free spectrum (dhess spectrum) validated against the dense oracle:
extreme eigenvalues, eigenvectors, trace estimates within their stated error,
SLQ density against the exact spectrum, exact and estimated diagonals."""
import json
import os
import sys
import tempfile
import unittest

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhess_run import dhess, main_with_ranks, oracle  # noqa: E402

RANKS = 1


def wasserstein1(x, wx, y, wy):
    """W1 distance between two discrete distributions on the line."""
    grid = np.sort(np.concatenate([x, y]))
    fx = np.array([wx[x <= t].sum() for t in grid]) / wx.sum()
    fy = np.array([wy[y <= t].sum() for t in grid]) / wy.sum()
    return float(np.sum(np.abs(fx - fy)[:-1] * np.diff(grid)))


def rademacher(seed, stream, n):
    """dhess's Rademacher probe (linalg/probes.hpp), entries 0..n-1, written out independently."""
    def mix(x):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))
    with np.errstate(over="ignore"):
        rows = np.arange(n, dtype=np.uint64)
        key = mix(np.uint64(stream) * np.uint64(0x100000001B3) + rows)
        return np.where(mix(np.uint64(seed) ^ key) & np.uint64(1), 1.0, -1.0)


class Spectrum(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.out = os.path.join(cls.tmp.name, "s")
        code, cls.stdout, err = dhess(RANKS, "spectrum", "--model", oracle("convnet.pt"), "--data",
                                      oracle("convnet_data.pt"), "--loss", "cross_entropy", "--top", "5", "--bottom",
                                      "5", "--slq-probes", "12", "--slq-steps", "60", "--trace-probes", "60", "--trace-estimator", "both",
                                      "--diagonal", "exact", "--out", cls.out)
        assert code == 0, err
        cls.H = np.load(oracle("convnet_H.npy"))
        cls.eig = np.load(oracle("convnet_eig.npy"))
        cls.summary = json.load(open(os.path.join(cls.out, "summary.json")))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_top5_and_bottom5_match_the_dense_spectrum(self):
        w = np.load(os.path.join(self.out, "eigenvalues.npy"))
        ref = np.concatenate([self.eig[:5], self.eig[-5:]])
        self.assertLessEqual(np.abs(w - ref).max() / np.abs(ref).max(), 1e-8)
        self.assertTrue(all(p["converged"] for p in self.summary["lanczos"]["pairs"]))

    def test_restarted_lanczos_finds_the_same_extremes(self):
        # A basis of 12 vectors for 3 top and 2 bottom pairs: thick restarts keep the wanted Ritz
        # vectors; the answer is the oracle's to the same tolerance as without restarts.
        out = os.path.join(self.tmp.name, "restarted")
        base = ["--model", oracle("convnet.pt"), "--data", oracle("convnet_data.pt"), "--loss", "cross_entropy",
                "--top", "3", "--bottom", "2", "--slq-probes", "0", "--trace-probes", "0", "--diagonal", "none"]
        code, _, err = dhess(RANKS, "spectrum", *base, "--lanczos-basis", "12", "--out", out)
        self.assertEqual(code, 0, err)
        summary = json.load(open(os.path.join(out, "summary.json")))
        # Lanczos alone multiplies at most its 5 pairs at once: no batched product is timed for it.
        self.assertIn("no product of this run is wide enough", summary["hvp"]["mode"])
        s = summary["lanczos"]
        self.assertEqual(s["basis"], 12)
        self.assertGreater(s["restarts"], 0)
        w = np.load(os.path.join(out, "eigenvalues.npy"))
        ref = np.concatenate([self.eig[:2], self.eig[-3:]])
        self.assertLessEqual(np.abs(w - ref).max() / np.abs(ref).max(), 1e-8)
        with h5py.File(os.path.join(out, "eigenvectors.h5"), "r") as f:
            Z = f["eigenvectors"][:]
        residual = np.linalg.norm(self.H @ Z - Z * w, axis=0) / np.abs(self.eig).max()
        self.assertLessEqual(residual.max(), 1e-7)
        code, _, err = dhess(RANKS, "spectrum", *base, "--lanczos-basis", "6", "--out", out + "6")
        self.assertEqual(code, 64, err)
        self.assertIn("--lanczos-basis 6", err)

    def test_loss_and_gradient_are_the_whole_data_sets_though_each_rank_holds_a_shard(self):
        # Each rank's first pass covers its data shard only; the parts are summed. The oracle: the
        # eager TorchScript model on the whole data set, differentiated once by Python torch.
        import torch
        import torch.nn.functional as F
        model = torch.jit.load(oracle("convnet.pt")).double()
        x, y = torch.load(oracle("convnet_data.pt"))
        loss = F.cross_entropy(model(x.double()), y)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads)).item()
        got = self.summary["model"]
        self.assertLessEqual(abs(got["loss_value"] - loss.item()), 1e-12 * abs(loss.item()))
        self.assertLessEqual(abs(got["gradient_norm"] - norm), 1e-10 * norm)

    def test_eigenvectors_satisfy_the_stated_criterion(self):
        w = np.load(os.path.join(self.out, "eigenvalues.npy"))
        with h5py.File(os.path.join(self.out, "eigenvectors.h5"), "r") as f:
            Z = f["eigenvectors"][:]
        self.assertEqual(Z.shape, (self.H.shape[0], 10))
        scale = np.abs(self.eig).max()
        residual = np.linalg.norm(self.H @ Z - Z * w, axis=0) / scale
        self.assertLessEqual(residual.max(), 1e-7)
        reported = np.array([p["residual"] for p in self.summary["lanczos"]["pairs"]])
        self.assertLessEqual(np.abs(reported - residual).max(), 1e-9)

    def test_trace_estimates_are_within_their_stated_error(self):
        t = self.summary["trace"]
        exact = np.trace(self.H)
        self.assertLessEqual(abs(t["hutchinson"] - exact), 4 * t["hutchinson_stderr"])
        self.assertLessEqual(abs(t["hutchpp"] - exact), 4 * t["hutchpp_stderr"])

    def test_slq_density_matches_the_exact_spectrum(self):
        # Metric: Wasserstein-1 distance between the SLQ quadrature measure and the
        # exact eigenvalue distribution, relative to the spectrum's width.
        q = np.loadtxt(os.path.join(self.out, "slq_nodes.csv"), delimiter=",", skiprows=1)
        w1 = wasserstein1(q[:, 1], q[:, 2], self.eig, np.ones_like(self.eig))
        self.assertLessEqual(w1 / (self.eig[-1] - self.eig[0]), 0.03)
        d = np.loadtxt(os.path.join(self.out, "density.csv"), delimiter=",", skiprows=1)
        self.assertAlmostEqual(np.trapezoid(d[:, 1], d[:, 0]), 1.0, delta=1e-3)
        self.assertTrue(os.path.exists(os.path.join(self.out, "spectrum.png")))

    def test_exact_diagonal_per_parameter(self):
        d = np.load(os.path.join(self.out, "diagonal.npy"))
        self.assertLessEqual(np.abs(d - np.diag(self.H)).max(), 1e-10 * np.abs(self.H).max())
        layout = json.load(open(os.path.join(self.out, "layout.json")))
        with h5py.File(os.path.join(self.out, "diagonal.h5"), "r") as f:
            for p in layout["parameters"]:
                self.assertEqual(list(f[p["name"]].shape), p["shape"])
                np.testing.assert_allclose(f[p["name"]][:].ravel(), d[p["offset"]:p["offset"] + p["size"]])

    def test_nonzero_spectrum_is_every_nonzero_eigenpair_of_the_oracle(self):
        out = os.path.join(self.tmp.name, "nz")
        code, _, err = dhess(RANKS, "spectrum", "--nonzero", "--model", oracle("convnet.pt"), "--data",
                             oracle("convnet_data.pt"), "--loss", "cross_entropy", "--out", out)
        self.assertEqual(code, 0, err)
        scale = np.abs(self.eig).max()
        nonzero = self.eig[np.abs(self.eig) > 1e-8 * scale]
        w = np.load(os.path.join(out, "eigenvalues.npy"))
        self.assertEqual(w.shape, nonzero.shape, "the count of nonzero eigenvalues")
        self.assertLessEqual(np.abs(w - nonzero).max(), 1e-9 * scale)
        with h5py.File(os.path.join(out, "eigenvectors.h5"), "r") as f:
            Z = f["eigenvectors"][:]
        self.assertLessEqual(np.linalg.norm(self.H @ Z - Z * w, axis=0).max(), 1e-9 * scale)
        s = json.load(open(os.path.join(out, "summary.json")))
        self.assertEqual(s["nonzero"]["zero_eigenvalues"], self.eig.size - nonzero.size)
        self.assertLessEqual(s["nonzero"]["certificate"]["relative"], 1e-9)
        self.assertAlmostEqual(s["trace"]["value"], np.trace(self.H), delta=1e-10 * scale)

    def test_nonzero_on_a_full_rank_hessian_says_so_and_is_complete(self):
        out = os.path.join(self.tmp.name, "mlp")
        code, _, err = dhess(RANKS, "spectrum", "--nonzero", "--model", "builtin:mlp", "--out", out)
        self.assertEqual(code, 0, err)
        self.assertIn("H has full rank", err)
        s = json.load(open(os.path.join(out, "summary.json")))
        self.assertEqual(s["nonzero"]["rank"], 141)

    def test_nonzero_refuses_when_the_basis_outgrows_memory(self):
        out = os.path.join(self.tmp.name, "small")
        # n = 164,165 of rank up to 672: the basis needs about 32 n / P bytes per vector, 1.3 MB on
        # 4 ranks, and 0.5 GB less the process holds at most a few hundred.
        code, _, err = dhess(RANKS, "spectrum", "--nonzero", "--model", "builtin:convnet:32", "--mem-per-rank",
                             "0.5G", "--out", out)
        self.assertEqual(code, 74, err)
        self.assertIn("n = 164165", err)
        self.assertIn("vectors memory holds", err)
        self.assertFalse(os.path.exists(os.path.join(out, "summary.json")))

    def test_hutchinson_trace_is_the_mean_of_its_probes_forms(self):
        # The start-up measures the products' memory and time on the trace's first probes and
        # keeps their products for the trace phase: the estimate must be exactly that of the
        # probes, zᵀHz with the oracle's H, the kept ones included.
        out = os.path.join(self.tmp.name, "hutchinson")
        code, _, err = dhess(RANKS, "spectrum", "--model", oracle("convnet.pt"), "--data", oracle("convnet_data.pt"),
                             "--loss", "cross_entropy", "--top", "0", "--bottom", "0", "--slq-probes", "0",
                             "--trace-probes", "9", "--trace-estimator", "hutchinson", "--diagonal", "none",
                             "--seed", "7", "--out", out)
        self.assertEqual(code, 0, err)
        s = json.load(open(os.path.join(out, "summary.json")))
        self.assertEqual(s["startup_products"], {"kept": 7, "used": 7})
        forms = [z @ self.H @ z for z in (rademacher(7, 2000 + c, self.H.shape[0]) for c in range(9))]
        scale = np.abs(forms).max()
        self.assertLessEqual(abs(s["trace"]["hutchinson"] - np.mean(forms)), 1e-10 * scale)
        self.assertAlmostEqual(s["trace"]["hutchinson_stderr"], np.std(forms, ddof=1) / 3, delta=1e-10 * scale)

    def test_hutchinson_diagonal_is_within_its_stated_error(self):
        out = os.path.join(self.tmp.name, "d")
        code, _, err = dhess(RANKS, "spectrum", "--model", oracle("convnet.pt"), "--data", oracle("convnet_data.pt"),
                             "--loss", "cross_entropy", "--top", "0", "--bottom", "0", "--slq-probes", "0",
                             "--trace-probes", "0", "--diagonal", "hutchinson", "--diagonal-probes", "200", "--out",
                             out)
        self.assertEqual(code, 0, err)
        with h5py.File(os.path.join(out, "diagonal.h5"), "r") as f:
            est = np.concatenate([f[n][:].ravel() for n in ("c1.weight", "c1.bias", "f2.weight", "f2.bias")])
            se = np.concatenate([f[n + ".stderr"][:].ravel() for n in ("c1.weight", "c1.bias", "f2.weight", "f2.bias")])
        exact = np.diag(self.H)
        inside = np.abs(est - exact) <= 4 * se + 1e-12
        self.assertGreaterEqual(inside.mean(), 0.97)


if __name__ == "__main__":
    main_with_ranks(sys.modules[__name__])
