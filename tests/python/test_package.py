#!/usr/bin/env python3
"""The Python package (python/dhess) against torch.autograd.functional.hessian on the eager model:
dhess.hessian() on the seed-000 convnet at a small size, blocks and eigenvectors read back in
torch's terms, load() of finished and unfinished runs, failures as DhessError, a model only
torch.jit.trace can export, tied weights, and the matrix-free spectrum().

  test_package.py [--ranks P]    (DHESS_EXE: the executable; DHESS_MPIEXEC for P > 1)
"""
import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import unittest
from unittest import mock

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import dhess  # noqa: E402

RANKS = 1
CHANNELS, HW, CLASSES, SAMPLES = 4, 4, 5, 8  # the seed-000 net at n = 365


class ConvNet(nn.Module):
    """The seed-000 question's network: Conv2d(1,C,3,1,1) → flatten → Linear(C·HW·HW, 5)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, CHANNELS, 3, 1, 1)
        self.f2 = nn.Linear(CHANNELS * HW * HW, CLASSES)

    def forward(self, x):
        return self.f2(torch.flatten(self.c1(x), 1))


class TwoInputs(nn.Module):
    """forward(*xs) cannot be scripted (varargs), so the package must trace it on the inputs."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 3)

    def forward(self, *xs):
        return self.lin(torch.tanh(torch.cat(xs, 1)))


class EncoderOverPieces(nn.Module):
    """forward(*pieces) cannot be scripted; its eval-mode TransformerEncoderLayer would record its
    fused fast path (no derivative at all) if traced without gradients."""

    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(4, nhead=2, dim_feedforward=6, dropout=0.0, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, *pieces):
        return self.head(self.enc(torch.cat(pieces, 1)).mean(1))


class TiedLayers(nn.Module):
    """b.weight IS a.weight: model.parameters() lists that tensor once."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class Unexportable(nn.Module):
    """Neither script (varargs) nor trace (forward raises) can export this."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, *xs):
        raise ValueError("this model only runs on Tuesdays")


def torch_hessian(f, model):
    """The oracle: torch.autograd.functional.hessian over tuple(model.parameters())."""
    return torch.autograd.functional.hessian(f, tuple(p.detach() for p in model.parameters()))


def as_matrix(blocks, model):
    """torch's nested blocks stitched into one n × n matrix, rows in parameters() order."""
    return np.block([[b.reshape(p.numel(), -1).numpy() for b in row] for row, p in zip(blocks, model.parameters())])


def convnet_problem():
    torch.manual_seed(0)
    model = ConvNet().double()
    x = torch.randn(SAMPLES, 1, HW, HW, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (SAMPLES,))

    def f(cw, cb, fw, fb):
        return F.cross_entropy(F.linear(torch.flatten(F.conv2d(x, cw, cb, 1, 1), 1), fw, fb), y)

    return model, x, y, f


def assert_same_structure_and_values(test, got, want, rel=1e-10):
    """Same nesting, order, shapes as torch's tuple of tuples; values within rel of its largest entry."""
    test.assertIsInstance(got, tuple)
    test.assertEqual(len(got), len(want))
    scale = max(float(b.abs().max()) for row in want for b in row)
    for i, (grow, wrow) in enumerate(zip(got, want)):
        test.assertIsInstance(grow, tuple)
        test.assertEqual(len(grow), len(wrow))
        for j, (g, w) in enumerate(zip(grow, wrow)):
            test.assertEqual(g.shape, w.shape, f"block [{i}][{j}]")
            test.assertLessEqual(float((g - w.to(g.dtype)).abs().max()) / scale, rel, f"block [{i}][{j}]")


def flat(parts):
    return np.concatenate([a.ravel() for a in parts])


class ConvNetHessian(unittest.TestCase):
    """One dhess.hessian(..., eigen='all') run, read back every way the package offers."""

    @classmethod
    def setUpClass(cls):
        cls.model, x, y, f = convnet_problem()
        cls.oracle = torch_hessian(f, cls.model)
        cls.H = as_matrix(cls.oracle, cls.model)
        cls.result = dhess.hessian(cls.model, x, y, eigen="all", ranks=RANKS, progress=False)

    @classmethod
    def tearDownClass(cls):
        cls.result.close()

    def test_as_torch_has_the_structure_shapes_and_values_of_autograd_hessian(self):
        assert_same_structure_and_values(self, self.result.as_torch(), self.oracle)

    def test_hessian_is_the_stitched_autograd_hessian(self):
        H = self.result.hessian()
        self.assertEqual(H.shape, (365, 365))
        self.assertLessEqual(np.abs(H - self.H).max() / np.abs(self.H).max(), 1e-10)

    def test_block_is_torchs_nested_block(self):
        block = self.result.block("c1.weight", "f2.bias")
        self.assertEqual(block.shape, (CHANNELS, 1, 3, 3, CLASSES))
        want = self.oracle[0][3].numpy()
        self.assertLessEqual(np.abs(block - want).max() / np.abs(self.H).max(), 1e-10)

    def test_compiled_hessian_is_the_same_and_its_packages_are_cached(self):
        if RANKS > 1:
            self.skipTest("the dense path's packages do not depend on the ranks (compiled_npP runs them on P)")
        model, x, y, _ = convnet_problem()
        with tempfile.TemporaryDirectory() as cache, mock.patch.dict(os.environ, {"DHESS_CACHE": cache}):
            with dhess.hessian(model, x, y, compiled=True, progress=False) as r:
                # The package runs, or was timed against the eager product and lost every panel of columns.
                self.assertRegex(r.summary["hvp"]["mode"], r"compiled \(AOTInductor|faster than the compiled package")
                self.assertLessEqual(np.abs(r.hessian() - self.H).max() / np.abs(self.H).max(), 1e-10)
            (key,) = os.listdir(os.path.join(cache, "compiled"))
            echoed = io.StringIO()
            with contextlib.redirect_stdout(echoed), dhess.hessian(model, x, y, compiled=True) as r:
                # The package runs, or was timed against the eager product and lost every panel of columns.
                self.assertRegex(r.summary["hvp"]["mode"], r"compiled \(AOTInductor|faster than the compiled package")
            self.assertIn(f"dhess compile: cached {os.path.join(cache, 'compiled', key)}", echoed.getvalue())

    def test_eigenvalues_are_those_of_the_oracle_ascending(self):
        w = self.result.eigenvalues
        self.assertTrue(np.all(np.diff(w) >= 0))
        ref = np.linalg.eigvalsh(self.H)
        self.assertLessEqual(np.abs(w - ref).max() / np.abs(ref).max(), 1e-10)

    def test_eigenvector_is_a_dict_in_parameter_shapes_with_h_z_equal_lambda_z(self):
        names = [n for n, _ in self.model.named_parameters()]
        for i in (0, -1):
            z = self.result.eigenvector(i)
            self.assertEqual(list(z), names)
            for name, p in self.model.named_parameters():
                self.assertEqual(z[name].shape, tuple(p.shape))
            v, lam = flat(z.values()), self.result.eigenvalues[i]
            self.assertLessEqual(np.linalg.norm(self.H @ v - lam * v) / np.abs(self.H).max(), 1e-10)

    def test_shares_split_each_eigenvector_over_the_parameters(self):
        shares = self.result.shares
        self.assertEqual(shares.shape, (365, 4))
        z = self.result.eigenvector(-1)
        want = np.array([np.sum(a ** 2) for a in z.values()])
        np.testing.assert_allclose(shares[-1], want, atol=1e-12)

    def test_ran_on_the_requested_ranks(self):
        self.assertEqual(self.result.summary["ranks"], RANKS)

    def test_load_reads_the_finished_run_again(self):
        with dhess.load(self.result.path) as again:
            np.testing.assert_array_equal(again.eigenvalues, self.result.eigenvalues)
            self.assertEqual(again.layout, self.result.layout)
            self.assertEqual(again.summary["n"], 365)

    def test_load_takes_a_layout_without_aliases_as_none(self):
        with tempfile.TemporaryDirectory() as tmp:
            layout = json.loads((self.result.path / "layout.json").read_text())
            for p in layout["parameters"]:
                p.pop("aliases", None)
            with open(os.path.join(tmp, "layout.json"), "w") as f:
                json.dump(layout, f)
            shutil.copy(self.result.path / "summary.json", tmp)
            self.assertEqual(dhess.load(tmp).layout, self.result.layout)

    def test_the_inputs_are_kept_beside_the_result(self):
        self.assertTrue((self.result.path / "model.pt").is_file())
        self.assertTrue((self.result.path / "data.pt").is_file())
        self.assertEqual([p.name for p in self.result.path.glob(".inputs-*")], [])

    def test_plot_writes_the_spectrum_figure(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = self.result.plot(os.path.join(tmp, "s.png"))
            self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")


class Lifecycle(unittest.TestCase):
    def test_without_eigen_eigenvalues_raise_and_close_removes_the_directory(self):
        model, x, y, _ = convnet_problem()
        echoed = io.StringIO()
        with contextlib.redirect_stdout(echoed):
            with dhess.hessian(model, x, y, ranks=RANKS) as r:
                with self.assertRaisesRegex(dhess.DhessError, "no eigenvalues.npy.*eigen='values'"):
                    r.eigenvalues
                with self.assertRaisesRegex(dhess.DhessError, "no eigenvectors.h5"):
                    r.eigenvector(0)
                self.assertEqual(r.block("f2.bias", "f2.bias").shape, (CLASSES, CLASSES))
                path = r.path
        self.assertIn("n = 365 parameters", echoed.getvalue())  # progress=True echoes dhess's lines
        self.assertFalse(path.exists())

    def test_out_keeps_the_result(self):
        model, x, y, _ = convnet_problem()
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "r")
            with dhess.hessian(model, x, y, eigen="values", save_hessian=False, ranks=RANKS, out=out,
                               progress=False) as r:
                with self.assertRaisesRegex(dhess.DhessError, "no hessian.h5.*save_hessian=True"):
                    r.hessian()
            self.assertTrue(os.path.isfile(os.path.join(out, "summary.json")))
            self.assertEqual(len(dhess.load(out).eigenvalues), 365)

    def test_load_of_a_directory_without_summary_says_why(self):
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "layout.json"), "w") as f:
                json.dump({"n": 1, "parameters": [{"name": "w", "shape": [1], "offset": 0, "size": 1}]}, f)
            with self.assertRaisesRegex(dhess.DhessError, "no finished dhess result: summary.json is missing"):
                dhess.load(tmp)


class Failures(unittest.TestCase):
    def test_wrong_loss_for_the_targets_is_dhess_input_error(self):
        model, x, y, _ = convnet_problem()
        with self.assertRaises(dhess.DhessError) as caught:
            dhess.hessian(model, x, y, loss="mse", ranks=RANKS, progress=False)
        self.assertEqual(caught.exception.exit_code, 65)
        self.assertRegex(caught.exception.message, r"^--loss mse: model output shape \[8,5\] does not match "
                                                    r"targets shape \[8\]")

    def test_bad_params_regex_is_a_usage_error_and_leaves_out_untouched(self):
        model, x, y, _ = convnet_problem()
        with tempfile.TemporaryDirectory() as out:
            with self.assertRaises(dhess.DhessError) as caught:
                dhess.hessian(model, x, y, params="c1.(weight", ranks=RANKS, out=out, progress=False)
            self.assertEqual(os.listdir(out), [])
        self.assertEqual(caught.exception.exit_code, 64)
        self.assertTrue(caught.exception.message.startswith("--params 'c1.(weight' is not a valid regular expression"))
        self.assertIn("exit 64", str(caught.exception))

    def test_a_model_neither_script_nor_trace_exports_names_its_class(self):
        with self.assertRaisesRegex(dhess.DhessError, "cannot export model Unexportable to TorchScript.*Tuesdays"):
            dhess.hessian(Unexportable(), torch.randn(3, 2), torch.randn(3, 2), loss="mse", ranks=RANKS)

    def test_a_missing_executable_is_a_clear_error(self):
        with mock.patch.dict(os.environ, {"DHESS_EXE": "/nonexistent/dhess"}):
            with self.assertRaisesRegex(dhess.DhessError, "DHESS_EXE is '/nonexistent/dhess'"):
                dhess.hessian(ConvNet(), torch.randn(2, 1, HW, HW), torch.tensor([0, 1]))


class OtherModels(unittest.TestCase):
    def test_a_traced_model_with_two_inputs(self):
        torch.manual_seed(1)
        model = TwoInputs().double()
        a, b = torch.randn(10, 2, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
        y = torch.randn(10, 3, dtype=torch.float64)

        def f(w, bias):
            return F.mse_loss(F.linear(torch.tanh(torch.cat([a, b], 1)), w, bias), y)

        with self.assertWarnsRegex(UserWarning, "TwoInputs could not be scripted"):
            r = dhess.hessian(model, (a, b), y, loss="mse", ranks=RANKS, progress=False)
        with r:
            assert_same_structure_and_values(self, r.as_torch(), torch_hessian(f, model))

    def test_a_traced_transformer_layer_is_differentiated_through_its_plain_path(self):
        torch.manual_seed(3)
        model = EncoderOverPieces().double().eval()
        a, b = torch.randn(6, 2, 4, dtype=torch.float64), torch.randn(6, 3, 4, dtype=torch.float64)
        y = torch.randn(6, 2, dtype=torch.float64)
        names = [n for n, _ in model.named_parameters()]

        def f(*params):  # the oracle differentiates SDPA's math backend: the fused kernels have no second derivative
            with sdpa_kernel(SDPBackend.MATH):
                out = torch.func.functional_call(model, dict(zip(names, params)), (a, b))
            return F.mse_loss(out, y)

        with self.assertWarnsRegex(UserWarning, "EncoderOverPieces could not be scripted"):
            r = dhess.hessian(model, (a, b), y, loss="mse", ranks=RANKS, progress=False)
        with r:
            assert_same_structure_and_values(self, r.as_torch(), torch_hessian(f, model))

    def test_gauss_newton_blocks_and_log_determinants_in_python(self):
        model, x, y, _ = convnet_problem()
        names = [n for n, _ in model.named_parameters()]
        theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        shapes = [p.shape for p in model.parameters()]

        def outputs(t):
            parts = dict(zip(names, torch.split(t, [int(np.prod(s)) for s in shapes])))
            return torch.func.functional_call(model, {n: parts[n].reshape(s) for n, s in zip(names, shapes)}, (x,))

        # The oracle, built explicitly: J^T H_L J with torch.func.
        z = outputs(theta).detach()
        J = torch.func.jacrev(lambda t: outputs(t).reshape(-1))(theta)
        H_L = torch.func.hessian(lambda o: F.cross_entropy(o.reshape(z.shape), y))(z.reshape(-1))
        G = (J.T @ H_L @ J).numpy()
        with dhess.hessian(model, x, y, loss="cross_entropy", eigen="values", ranks=RANKS, progress=False,
                           curvature="ggn", blocks="modules", prior_precision=[0.1, 1]) as r:
            self.assertEqual(r.curvature, "ggn")
            self.assertLessEqual(np.abs(r.hessian() - G).max(), 1e-10 * np.abs(G).max())
            self.assertEqual(list(r.blocks), ["c1", "f2"])
            conv = r.blocks["c1"]
            self.assertAlmostEqual(conv.trace, np.trace(G[:conv.n, :conv.n]), delta=1e-9 * np.abs(G).max())
            for delta in (0.1, 1.0):
                sign, logdet = np.linalg.slogdet(G + delta * np.eye(len(G)))
                self.assertEqual(sign, 1.0)
                self.assertAlmostEqual(r.log_det(delta), logdet, delta=1e-8 * abs(logdet))
            with self.assertRaises(KeyError):
                r.log_det(0.5)

    def test_loss_none_without_data_matches_the_closed_form(self):
        class Cubic(nn.Module):
            def __init__(self):
                super().__init__()
                self.x = nn.Parameter(torch.tensor(1.5, dtype=torch.float64))
                self.y = nn.Parameter(torch.tensor(-0.5, dtype=torch.float64))

            def forward(self):
                return 2 * self.x * self.y ** 2 + self.x ** 3 - 10

        with dhess.hessian(Cubic(), None, loss="none", eigen="values", ranks=RANKS, progress=False) as r:
            x, y = 1.5, -0.5  # d²/dx² = 6x, d²/dxdy = 4y, d²/dy² = 4x
            np.testing.assert_allclose(r.hessian(), [[6 * x, 4 * y], [4 * y, 4 * x]], rtol=1e-12)
            self.assertEqual(r.block("x", "y").shape, ())

    def test_tied_weights_appear_once_with_their_alias(self):
        """dhess lists a tied tensor once, like model.parameters(), its other names in "aliases"."""
        torch.manual_seed(2)
        model = TiedLayers().double()
        x, y = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)

        def f(w, ab, bb):
            return F.mse_loss(F.linear(torch.tanh(F.linear(x, w, ab)), w, bb), y)

        with dhess.hessian(model, x, y, loss="mse", ranks=RANKS, progress=False) as r:
            self.assertEqual(list(r.layout), ["a.weight", "a.bias", "b.bias"])
            self.assertEqual(r.layout["a.weight"].aliases, ("b.weight",))
            self.assertEqual(r.parameter("b.weight"), r.layout["a.weight"])
            assert_same_structure_and_values(self, r.as_torch(), torch_hessian(f, model))

    def test_spectrum_finds_the_extreme_eigenpairs(self):
        model, x, y, f = convnet_problem()
        H = as_matrix(torch_hessian(f, model), model)
        ref = np.linalg.eigvalsh(H)
        with dhess.spectrum(model, x, y, top=3, bottom=2, slq_probes=0, trace_probes=0, diagonal="none",
                            ranks=RANKS, progress=False) as r:
            want = np.concatenate([ref[:2], ref[-3:]])
            self.assertLessEqual(np.abs(r.eigenvalues - want).max() / np.abs(ref).max(), 1e-8)
            np.testing.assert_allclose(r.shares.sum(axis=1), 1.0, rtol=1e-12)
            z = flat(r.eigenvector(-1).values())
            self.assertLessEqual(np.linalg.norm(H @ z - ref[-1] * z) / np.abs(ref).max(), 1e-7)

    def test_spectrum_diagonal_in_parameter_shapes(self):
        model, x, y, f = convnet_problem()
        H = as_matrix(torch_hessian(f, model), model)
        with dhess.spectrum(model, x, y, top=0, bottom=0, slq_probes=0, trace_probes=0, diagonal="exact",
                            ranks=RANKS, progress=False) as r:
            d = r.diagonal
            self.assertEqual([v.shape for v in d.values()], [tuple(p.shape) for p in model.parameters()])
            self.assertLessEqual(np.abs(flat(d.values()) - np.diag(H)).max(), 1e-10 * np.abs(H).max())
            self.assertAlmostEqual(r.summary["trace"]["value"], np.trace(H), delta=1e-10 * np.abs(H).max())
            self.assertTrue(r.summary["trace"]["exact"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", type=int, default=1)
    args, rest = parser.parse_known_args()
    RANKS = args.ranks
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
