#!/usr/bin/env python3
"""Where Debian's LP64 ScaLAPACK really breaks, found by probes (tests/limits/int32_probe.cpp, one
process each, since past a limit a probe may crash), and dhess refusing those sizes before any
Hessian-vector product with the smallest rank count that works.

- Any ScaLAPACK driver forms local offsets like A(IIA+(JJA-1)*LDA) in 32 bits: pslaset on element
  (n, n) lands at n = 46,340 (n^2 = 2,147,395,600 local elements) and crashes or misses at
  n = 46,341 (2,147,488,281 > 2^31 - 1).
- pdsyevd's workspace 1 + 6n + 2 n^2 (one process) is an int: right at n = 32,760, wrapped at 32,800.
- pdsyevr with eigenvectors needs about 2 n^2 as well; values only need O(n): only the local index
  limits them.
"""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from dhess_run import dhess  # noqa: E402

PROBE = os.environ.get("DHESS_INT32_PROBE", "int32_probe")
INT32_MAX = 2**31 - 1


def probe(*args):
    p = subprocess.run([PROBE] + [str(a) for a in args], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout.split()


class ScaLapackLimits(unittest.TestCase):
    def test_local_index_breaks_past_two_to_the_31_elements(self):
        code, out = probe("index", 46340)
        self.assertEqual((code, out), (0, ["ok"]))
        code, out = probe("index", 46341)
        self.assertTrue(code != 0 or out == ["wrong"], (code, out))

    def test_pdsyevd_workspace_wraps_past_two_to_the_31(self):
        for n, fits in ((32760, True), (32800, False)):
            code, out = probe("lwork", "pdsyevd", n)
            self.assertEqual((code, out[1]), (0, "0"))
            want = 1 + 6 * n + 2 * n * n
            self.assertEqual(want <= INT32_MAX, fits)
            self.assertEqual(int(out[0]) >= want, fits, (n, out, want))

    def test_pdsyevr_values_need_little_workspace(self):
        for n in (46340, 46341):
            code, out = probe("lwork", "pdsyevr-values", n)
            self.assertEqual(code, 0)
            self.assertLess(int(out[0]), 100 * n)

    def test_pdsyevr_vectors_workspace_wraps_near_local_share_of_two_to_the_30(self):
        code, out = probe("lwork", "pdsyevr-vectors", 30000)
        self.assertGreaterEqual(int(out[0]), 30000 * 30000)
        code, out = probe("lwork", "pdsyevr-vectors", 46340)
        self.assertLess(int(out[0]), 46340 * 46340, "the query no longer wraps: revisit the limit")


class DhessRefuses(unittest.TestCase):
    """The issue's two examples once planned as fitting; the run would have failed after all products."""

    def plan(self, ranks, *args):
        code, out, err = dhess(1, "plan", "--ranks", ranks, "--mem-per-rank", "400000000000", "--json", *args)
        self.assertEqual(code, 0, err)
        return json.loads(out)

    def test_one_rank_past_the_local_index_gets_the_smallest_rank_count(self):
        plan = self.plan(1, "--model", "builtin:convnet:18", "--eigen", "values", "--solver", "pdsyevr")
        self.assertFalse(plan["fits"])
        self.assertIn("n = 52165", plan["limit"])
        self.assertIn("2^31 - 1", plan["limit"])
        self.assertIn("use at least 2 ranks (grid 1x2)", plan["limit"])
        self.assertEqual(plan["suggested_ranks"], 2)

    def test_four_ranks_too_few_for_n_164165(self):
        plan = self.plan(4, "--model", "builtin:convnet:32", "--eigen", "values", "--solver", "pdsyevr")
        self.assertFalse(plan["fits"])
        self.assertIn("use at least 13 ranks", plan["limit"])

    def test_the_run_is_refused_before_any_product(self):
        code, _, err = dhess(1, "--model", "builtin:convnet:18", "--eigen", "values", "--solver", "pdsyevr",
                             "--mem-per-rank", "400G", "--out", "/nonexistent/never-written")
        self.assertEqual(code, 74, err)
        self.assertIn("use at least 2 ranks", err)

    def test_auto_takes_a_solver_within_the_limits(self):
        # All pairs of n = 36,325 on one process: LAPACK's, pdsyevd's and pdsyevr's workspaces
        # (about 2 n^2) pass 2^31, ELPA allocates its own and its n^2 share is within the index.
        plan = self.plan(1, "--model", "builtin:convnet:15", "--eigen", "all")
        self.assertEqual((plan["n"], plan["solver"], plan.get("limit")), (36325, "elpa", None))
        plan = self.plan(1, "--model", "builtin:convnet:15", "--eigen", "all", "--solver", "pdsyevd")
        self.assertFalse(plan["fits"])
        self.assertIn("pdsyevd's workspace would be", plan["limit"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
