#!/usr/bin/env python3
"""The curvature family (issue 23): --curvature ggn and ef through the dense run and dhess
spectrum on P ranks against make_curvature.py's oracles (torch.func built explicitly, checked
there against curvlinops-for-pytorch), Laplace log-determinants against numpy, and per-block
curvature (--blocks) against the oracle's diagonal blocks.

Usage: test_curvature.py --ranks P
"""
import json
import os
import sys
import tempfile
import unittest

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhess_run import dhess, main_with_ranks  # noqa: E402

RANKS = 1
CURVATURE = os.environ.get("DHESS_CURVATURE_DIR", "curvature")
CASES = json.load(open(os.path.join(CURVATURE, "curvature.json")))["cases"]


def path(name):
    return os.path.join(CURVATURE, name)


def read_json(p):
    with open(p) as f:
        return json.load(f)


class Curvature(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def run_case(self, case, *extra, command=(), expect=0):
        c = CASES[case]
        out = os.path.join(self.tmp.name, "_".join((case,) + tuple(command) + tuple(extra)).replace("/", "_")[:120])
        code, stdout, stderr = dhess(RANKS, *command, "--model", path(case + ".pt"), "--data", path(case + "_data.pt"),
                                     "--loss", c["loss"], *c["flags"], *extra, "--out", out)
        self.assertEqual(code, expect, f"{case} {' '.join(extra)}\nstdout:{stdout}\nstderr:{stderr}")
        return out, stdout, stderr

    def dense(self, case, curvature, *extra):
        out, stdout, stderr = self.run_case(case, "--curvature", curvature, "--save-hessian", *extra)
        with h5py.File(os.path.join(out, "hessian.h5"), "r") as f:
            matrix = f["hessian"][:]
        return matrix, out, stdout, stderr

    def assert_matrix(self, got, want, what):
        scale = max(np.abs(want).max(), 1e-300)
        self.assertEqual(got.shape, want.shape, what)
        self.assertLessEqual(np.abs(got - want).max(), 1e-10 * scale, what)

    def test_ggn_matches_the_oracle_for_every_loss_and_is_positive_semidefinite(self):
        for case in ("mlp_ce", "conv_mse", "mlp_bce", "lm_padded"):
            want = np.load(path(case + "_ggn.npy"))
            got, out, _, _ = self.dense(case, "ggn", "--eigen", "values")
            self.assert_matrix(got, want, case + " ggn")
            w = np.load(os.path.join(out, "eigenvalues.npy"))
            scale = np.abs(w).max()
            self.assertLessEqual(np.abs(w - np.linalg.eigvalsh(want)).max(), 1e-9 * scale, case)
            self.assertGreaterEqual(w.min(), -1e-12 * scale, case + ": the GGN is positive semi-definite")
            self.assertEqual(read_json(os.path.join(out, "summary.json"))["model"]["curvature"], "ggn")

    def test_empirical_fisher_matches_the_oracle_and_its_rank_is_at_most_the_terms(self):
        for case in ("mlp_ce", "conv_mse", "mlp_bce", "lm_padded"):
            want = np.load(path(case + "_ef.npy"))
            got, _, _, _ = self.dense(case, "ef", "--eigen", "none")
            self.assert_matrix(got, want, case + " ef")
        # The rank-revealing solver answers it: 12 samples, n = 52.
        out, stdout, _ = self.run_case("mlp_ce", "--curvature", "ef", "--solver", "lowrank", "--eigen", "values")
        s = read_json(os.path.join(out, "summary.json"))
        self.assertEqual(s["solver"], "lowrank")
        self.assertLessEqual(s["lowrank"]["rank"], CASES["mlp_ce"]["samples"])
        w = np.load(os.path.join(out, "eigenvalues.npy"))
        want = np.linalg.eigvalsh(np.load(path("mlp_ce_ef.npy")))
        self.assertLessEqual(np.abs(w - want).max(), 1e-9 * np.abs(want).max())

    def test_hessian_minus_ggn_is_the_residual_zero_for_a_linear_model_with_mse(self):
        hessian, _, _, _ = self.dense("linear_mse", "hessian", "--eigen", "none")
        ggn, _, _, _ = self.dense("linear_mse", "ggn", "--eigen", "none")
        self.assert_matrix(ggn, np.load(path("linear_mse_ggn.npy")), "linear ggn")
        self.assertLessEqual(np.abs(hessian - ggn).max(), 1e-12 * np.abs(hessian).max())
        # And where the residual is not zero, the two differ: the comparison can fail.
        h, g = np.load(path("mlp_ce_H.npy")), np.load(path("mlp_ce_ggn.npy"))
        self.assertGreater(np.abs(h - g).max(), 1e-3 * np.abs(h).max())

    def test_nll_gives_a_zero_ggn_and_says_why(self):
        got, _, _, stderr = self.dense("logsoftmax_nll", "ggn", "--eigen", "none")
        self.assertEqual(np.abs(got).max(), 0.0)
        self.assertIn("linear in the model's outputs", stderr)

    def test_loss_none_is_refused_for_ggn_and_ef(self):
        for curvature in ("ggn", "ef"):
            code, _, stderr = dhess(RANKS, "--model", "builtin:mlp", "--loss", "none", "--curvature", curvature,
                                    "--out", os.path.join(self.tmp.name, curvature))
            self.assertEqual(code, 64, stderr)
            self.assertIn("--loss none", stderr)

    def test_matrix_free_ggn_extremes_and_ef_nonzero_spectrum(self):
        want = np.linalg.eigvalsh(np.load(path("conv_mse_ggn.npy")))
        out, stdout, _ = self.run_case("conv_mse", "--curvature", "ggn", "--top", "3", "--bottom", "0",
                                       "--slq-probes", "0", "--trace-probes", "0", "--diagonal", "exact",
                                       command=("spectrum",))
        w = np.load(os.path.join(out, "eigenvalues.npy"))
        self.assertLessEqual(np.abs(w - want[-3:]).max(), 1e-8 * np.abs(want).max())
        s = read_json(os.path.join(out, "summary.json"))
        self.assertAlmostEqual(s["trace"]["value"], np.trace(np.load(path("conv_mse_ggn.npy"))), delta=1e-9 * abs(want).sum())
        self.assertIn("Gauss-Newton matrix-vector products", stdout)
        ef = np.linalg.eigvalsh(np.load(path("lm_padded_ef.npy")))
        out, _, _ = self.run_case("lm_padded", "--curvature", "ef", "--nonzero", command=("spectrum",))
        nonzero = ef[np.abs(ef) > 1e-8 * np.abs(ef).max()]
        w = np.load(os.path.join(out, "eigenvalues.npy"))
        self.assertEqual(w.size, nonzero.size)
        self.assertLessEqual(np.abs(w - nonzero).max(), 1e-9 * np.abs(ef).max())

    def test_log_determinants_for_a_laplace_approximation(self):
        deltas = (1e-3, 0.1, 2.0)
        _, out, stdout, _ = self.dense("mlp_ce", "ggn", "--eigen", "values", "--prior-precision",
                                       ",".join(map(str, deltas)))
        want = np.load(path("mlp_ce_ggn.npy"))
        got = read_json(os.path.join(out, "summary.json"))["log_determinants"]["values"]
        self.assertEqual([v["prior_precision"] for v in got], list(deltas))
        for v, delta in zip(got, deltas):
            sign, logdet = np.linalg.slogdet(want + delta * np.eye(len(want)))
            self.assertEqual(sign, 1.0)
            self.assertAlmostEqual(v["log_det"], logdet, delta=1e-8 * abs(logdet))
        self.assertIn("log det(C + delta I)", stdout)
        # The Hessian is indefinite: where lambda_min + delta <= 0 there is no log-determinant.
        _, out, _, _ = self.dense("mlp_ce", "hessian", "--eigen", "values", "--prior-precision", "1e-9")
        v = read_json(os.path.join(out, "summary.json"))["log_determinants"]["values"][0]
        self.assertIsNone(v["log_det"])
        self.assertFalse(v["positive_definite"])

    def assert_blocks(self, blocks, matrix, expected_names, exact=True):
        self.assertEqual([b["name"] for b in blocks], expected_names)
        total = np.trace(matrix)
        covered = 0
        for b in blocks:
            rows = np.concatenate([np.arange(s, e) for s, e in b["ranges"]])
            covered += rows.size
            sub = matrix[np.ix_(rows, rows)]
            self.assertEqual(b["n"], rows.size)
            tolerance = 1e-9 * np.abs(np.diag(matrix)).sum() if exact else 4 * b["trace_stderr"] + 1e-12
            self.assertLessEqual(abs(b["trace"] - np.trace(sub)), tolerance, b["name"])
            self.assertAlmostEqual(b["trace_share"], b["trace"] / sum(x["trace"] for x in blocks), places=12)
            top = np.linalg.eigvalsh(sub)[::-1][:len(b["top"])]
            self.assertLessEqual(np.abs(np.array(b["top"]) - top).max(), 1e-8 * np.abs(matrix).max(), b["name"])
        self.assertEqual(covered, matrix.shape[0])
        if exact:
            self.assertAlmostEqual(sum(b["trace"] for b in blocks), total, delta=1e-9 * abs(total))

    def test_blocks_of_the_dense_run_are_the_diagonal_blocks_of_the_matrix(self):
        _, out, stdout, _ = self.dense("conv_mse", "ggn", "--eigen", "values", "--blocks", "tensors",
                                       "--block-top", "2")
        blocks = read_json(os.path.join(out, "blocks.json"))
        self.assertEqual(read_json(os.path.join(out, "summary.json"))["blocks"], blocks)
        self.assert_blocks(blocks, np.load(path("conv_mse_ggn.npy")), ["c1.weight", "c1.bias", "f2.weight", "f2.bias"])
        self.assertIn("per block", stdout)
        _, out, _, _ = self.dense("lm_padded", "hessian", "--eigen", "none", "--blocks", "embedding=^emb;head=^out")
        self.assert_blocks(read_json(os.path.join(out, "blocks.json")), np.load(path("lm_padded_H.npy")),
                           ["embedding", "head", "other"])

    def test_blocks_of_dhess_spectrum_exact_and_estimated(self):
        H = np.load(path("conv_mse_H.npy"))
        out, _, _ = self.run_case("conv_mse", "--blocks", "modules", "--top", "0", "--bottom", "0", "--slq-probes",
                                  "0", "--trace-probes", "0", "--diagonal", "exact", command=("spectrum",))
        self.assert_blocks(read_json(os.path.join(out, "blocks.json")), H, ["c1", "f2"])
        out, _, _ = self.run_case("conv_mse", "--blocks", "modules", "--top", "0", "--bottom", "0", "--slq-probes",
                                  "0", "--trace-probes", "0", "--diagonal", "hutchinson", "--diagonal-probes", "400",
                                  command=("spectrum",))
        blocks = read_json(os.path.join(out, "blocks.json"))
        self.assertFalse(blocks[0]["trace_exact"])
        self.assert_blocks(blocks, H, ["c1", "f2"], exact=False)

    def test_a_block_group_matching_nothing_is_refused_before_any_product(self):
        out, _, stderr = self.run_case("mlp_ce", "--blocks", "attention=^attn", expect=64)
        self.assertIn("group 'attention' matches no parameter", stderr)


if __name__ == "__main__":
    main_with_ranks(sys.modules[__name__])
