#!/usr/bin/env python3
"""Compiled Hessian-vector products (issue 24): `dhess compile` packages the oracle convnet's product
(AOTInductor) and `--compiled` runs it on P ranks. The dense Hessian and dhess spectrum's eigenvalues
against the eager run and the oracle (make_cases.py); a package of another model with the same
parameters, one of another dtype and one of other shapes are not used (the eager product, said why);
bad paths are one-line errors.

Usage: test_compiled.py --write-fixtures DIR   (compiles the packages once, about a minute)
       test_compiled.py --ranks P              (DHESS_COMPILED_DIR: that DIR)
"""
import json
import os
import sys
import tempfile
import unittest

import h5py
import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhess_run import BIN, dhess, main_with_ranks, oracle, run_command  # noqa: E402

RANKS = 1
COMPILED = os.environ.get("DHESS_COMPILED_DIR", "compiled")
WIDTH = "4"
PROBLEM = ("--model", oracle("convnet.pt"), "--data", oracle("convnet_data.pt"), "--loss", "cross_entropy")
SPECTRUM = ("--top", "3", "--bottom", "2", "--slq-probes", "0", "--trace-probes", "8", "--trace-estimator",
            "hutchinson", "--diagonal", "none")


def packages(ranks):
    """The packages of a run on `ranks` ranks: its data shards' micro-batch sizes (the dense path: 1)."""
    return os.path.join(COMPILED, f"ranks{ranks}")


def compile_packages(out):
    """The whole data set's product (6 samples, both methods timed) and the shards' of 2 and 4 ranks."""
    for ranks, method in ((1, "auto"), (2, "reverse-over-reverse"), (4, "reverse-over-reverse")):
        code, stdout, stderr = run_command([BIN, "compile", *PROBLEM, "--width", WIDTH, "--ranks", str(ranks),
                                            "--method", method, "--threads", "2",
                                            "--out", os.path.join(out, f"ranks{ranks}"), "--force"])
        print(stdout, stderr)
        if code != 0:
            sys.exit(code)


def hessian(out):
    with h5py.File(os.path.join(out, "hessian.h5"), "r") as f:
        return f["hessian"][:]


def summary(out):
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


class CompiledProduct(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def run_dhess(self, *args, expect=0, model=PROBLEM):
        out = os.path.join(self.tmp.name, f"run{len(os.listdir(self.tmp.name))}")
        code, stdout, stderr = dhess(RANKS, *args, *model, "--out", out)
        self.assertEqual(code, expect, f"{' '.join(map(str, args))}\nstdout:{stdout}\nstderr:{stderr}")
        return out, stdout, stderr

    def test_the_compiled_hessian_equals_the_eager_one(self):
        eager, _, _ = self.run_dhess("--save-hessian", "--eigen", "none")
        out, stdout, _ = self.run_dhess("--save-hessian", "--eigen", "none", "--compiled", packages(1))
        self.assertIn("HVP compiled (AOTInductor", stdout)
        self.assertIn("compiled", summary(out)["hvp"]["mode"])
        got, want = hessian(out), hessian(eager)
        self.assertLessEqual(np.abs(got - want).max(), 1e-12 * np.abs(want).max())
        H = np.load(oracle("convnet_H.npy"))
        self.assertLessEqual(np.abs(got - H).max(), 1e-10 * np.abs(H).max())

    def test_the_plan_times_the_compiled_product_and_counts_its_compile(self):
        code, stdout, stderr = dhess(RANKS, "plan", *PROBLEM, "--compiled", packages(1))
        self.assertEqual(code, 0, stderr)
        self.assertRegex(stdout, r"products: compiled \(AOTInductor.*compiling took [0-9.]+ s, once")

    def test_spectrum_takes_the_packages_of_its_data_shards(self):
        out, stdout, _ = self.run_dhess("spectrum", *SPECTRUM, "--compiled", packages(RANKS))
        self.assertIn("compiled", summary(out)["hvp"]["mode"], stdout)
        eig = np.load(oracle("convnet_eig.npy"))
        want = np.concatenate([eig[:2], eig[-3:]])
        got = np.load(os.path.join(out, "eigenvalues.npy"))
        self.assertLessEqual(np.abs(got - want).max(), 1e-8 * np.abs(want).max())

    def test_compile_keeps_the_faster_method_and_records_both(self):
        with open(os.path.join(packages(1), "compile.json")) as f:
            record = json.load(f)
        (package,) = record["packages"]
        self.assertEqual(package["samples"], 6)
        self.assertEqual({m["method"] for m in package["methods"]}, {"reverse-over-reverse", "forward-over-reverse"})
        timed = [m for m in package["methods"] if "compiled_seconds_per_vector" in m]
        kept = min(timed, key=lambda m: m["compiled_seconds_per_vector"])
        self.assertEqual(package["kept"], kept["method"])
        for m in timed:
            self.assertLessEqual(m["relative_error"], 1e-12)
            self.assertGreater(m["compile_seconds"], 0)

    def test_a_package_of_another_model_is_not_used(self):
        """The same parameter names and shapes, tanh between the layers: the first product's check
        against the eager one finds it, and the run is exact (eager)."""
        twin = os.path.join(self.tmp.name, "twin.pt")
        torch.jit.script(TanhTwin()).save(twin)
        model = ("--model", twin, "--data", oracle("convnet_data.pt"), "--loss", "cross_entropy")
        eager, _, _ = self.run_dhess("--save-hessian", "--eigen", "none", model=model)
        out, stdout, _ = self.run_dhess("--save-hessian", "--eigen", "none", "--compiled", packages(1), model=model)
        self.assertIn("disagreed with the eager one", summary(out)["hvp"]["mode"], stdout)
        np.testing.assert_allclose(hessian(out), hessian(eager), rtol=0, atol=1e-13 * np.abs(hessian(eager)).max())

    def test_a_package_of_other_shapes_or_dtype_is_not_used(self):
        out, _, _ = self.run_dhess("--eigen", "none", "--dtype", "float32", "--compiled", packages(1))
        self.assertIn("compiled for float64, not float32", summary(out)["hvp"]["mode"])
        out, _, _ = self.run_dhess("--eigen", "none", "--compiled", packages(2))
        self.assertIn("1 of 1 micro-batches (6 samples) have no package", summary(out)["hvp"]["mode"])

    def test_bad_paths_are_one_line_errors(self):
        _, _, stderr = self.run_dhess("--compiled", os.path.join(self.tmp.name, "missing"), expect=65)
        self.assertIn("does not exist (write it with dhess compile)", stderr)
        if RANKS > 1:
            return
        code, _, stderr = run_command([BIN, "compile", "--model", os.path.join(self.tmp.name, "none.pt")])
        self.assertEqual((code, stderr.count("\n")), (65, 1), stderr)
        code, _, stderr = run_command([BIN, "compile", *PROBLEM, "--out", packages(1)])
        self.assertEqual(code, 65, stderr)
        self.assertIn("give --force to replace it", stderr)
        if not torch.cuda.is_available():  # a package for a GPU is compiled on one
            code, _, stderr = run_command([BIN, "compile", *PROBLEM, "--device", "cuda",
                                           "--out", os.path.join(self.tmp.name, "gpu")])
            self.assertEqual((code, stderr.count("\n")), (65, 1), stderr)
            self.assertIn("sees no GPU", stderr)


class TanhTwin(nn.Module):
    """make_cases.py's convnet (c1: Conv2d(1, 4, 3, 1, 1), f2: Linear(100, 3)) with tanh between them."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, 1, 1).double()
        self.f2 = nn.Linear(100, 3).double()

    def forward(self, x):
        return self.f2(torch.flatten(torch.tanh(self.c1(x)), 1))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write-fixtures":
        compile_packages(sys.argv[2])
    else:
        main_with_ranks(sys.modules[__name__])
