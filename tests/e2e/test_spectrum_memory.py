#!/usr/bin/env python3
"""The memory plan of dhess spectrum covers the real peak: on a BatchNorm ResNet (bench/resnet20.py
--small, 64 images) and the convnet, with few and many probes, the peak RSS of every rank stays
within 1.25x the plan; under a small budget the product width and the Lanczos basis are fitted to
it (the basis restarted); a budget that cannot
hold even one vector per product is refused before the first product (exit 74)."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhess_run import dhess  # noqa: E402

RESNET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "resnet20.py")
PYTHON = os.environ.get("DHESS_PYTHON", sys.executable)


class SpectrumMemory(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        subprocess.run([PYTHON, RESNET, cls.tmp.name, "--small", "--images", "64"], check=True,
                       capture_output=True)
        cls.resnet = ["--model", os.path.join(cls.tmp.name, "resnet20.pt"), "--data",
                      os.path.join(cls.tmp.name, "resnet20_data.pt"), "--loss", "cross_entropy"]

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def run_spectrum(self, *args):
        out = os.path.join(self.tmp.name, "out")
        code, _, err = dhess(2, "spectrum", *args, "--out", out, "--force", "-q")
        self.assertEqual(code, 0, err)
        with open(os.path.join(out, "summary.json")) as f:
            memory = json.load(f)["memory"]
        peak, plan = max(memory["peak_rss_per_rank"]), memory["plan"]
        self.assertLessEqual(peak, 1.25 * plan["total"], f"{args}: peak {peak:.3g} B, plan {plan['total']:.3g} B")
        return plan

    def test_batchnorm_resnet_within_the_plan_with_few_and_many_probes(self):
        # --hvp-mode batched: the widths memory allows, which --hvp-mode auto narrows where it measures
        # batching to buy nothing on this machine (a timing; the plan must hold for the widest).
        base = self.resnet + ["--top", "1", "--bottom", "0", "--slq-probes", "0", "--diagonal", "none", "--hvp-mode",
                              "batched"]
        self.run_spectrum(*base, "--trace-probes", "4")
        plan = self.run_spectrum(*base, "--trace-probes", "52")
        self.assertEqual(plan["product_columns"], 18, "Hutch++'s widest product of 52 probes")

    def test_product_width_is_fitted_to_a_small_budget(self):
        plan = self.run_spectrum(*self.resnet, "--top", "1", "--bottom", "0", "--slq-probes", "0", "--diagonal",
                                 "none", "--trace-probes", "120", "--trace-estimator", "hutchinson",
                                 "--mem-per-rank", "1.0G", "--hvp-mode", "batched")
        self.assertLess(plan["product_columns"], 64)
        self.assertLessEqual(plan["total"], 1.0e9)

    def test_a_lanczos_basis_past_memory_is_restarted_within_the_plan(self):
        # Every step's vector of n = 19,954 steps is 1.6 GB per rank: the plan holds what 1 GB leaves.
        plan = self.run_spectrum(*self.resnet, "--top", "1", "--bottom", "0", "--slq-probes", "0", "--diagonal",
                                 "none", "--trace-probes", "0", "--max-steps", "20000", "--mem-per-rank", "1.0G")
        self.assertLess(plan["lanczos_basis"], 19954)
        self.assertGreaterEqual(plan["lanczos_basis"], 6)
        self.assertLessEqual(plan["total"], 1.0e9)

    def test_convnet_with_every_phase_under_a_budget(self):
        self.run_spectrum("--model", "builtin:convnet:8", "--top", "5", "--bottom", "5", "--trace-probes", "52",
                          "--slq-probes", "40", "--mem-per-rank", "0.5G")

    def test_a_budget_below_one_vector_per_product_is_refused_before_any(self):
        out = os.path.join(self.tmp.name, "refused")
        code, _, err = dhess(2, "spectrum", *self.resnet, "--top", "1", "--trace-probes", "52", "--mem-per-rank",
                             "0.3G", "--out", out)
        self.assertEqual(code, 74, err)
        self.assertIn("the matrix-free run needs", err)
        self.assertIn("products of 1 vector(s)", err)
        # The remedies: what holds the memory (the product: fewer samples per pass, not fewer Lanczos
        # steps), and float32 for a float64 run.
        self.assertIn("--batch-size", err)
        self.assertNotIn("--max-steps", err)
        self.assertIn("--dtype float32", err)
        self.assertFalse(os.path.exists(os.path.join(out, "summary.json")))


if __name__ == "__main__":
    unittest.main(verbosity=2)
