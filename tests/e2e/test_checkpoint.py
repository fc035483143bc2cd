#!/usr/bin/env python3
"""Checkpoint/restart end to end: SIGUSR1 stops every rank cleanly with a
checkpoint; a run killed with SIGKILL resumes on another rank count and gives
exactly the Hessian and eigenvalues of an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhess_run import BIN, MPIEXEC, descendants, dhess  # noqa: E402

MODEL = ["--model", "builtin:convnet:5", "--panel", "8", "--eigen", "values", "--save-hessian"]


def rank_pids(launcher):
    """PIDs of the dhess processes started by this mpiexec."""
    found = []
    for pid in descendants(launcher.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[0].endswith(b"dhess"):
                    found.append(pid)
        except OSError:
            continue
    return found


def wait_for_panels(directory, count, proc, timeout=120):
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if os.path.isdir(directory) and len([f for f in os.listdir(directory) if f.endswith(".panel")]) >= count:
            return True
        time.sleep(0.2)
    return False


class Checkpoint(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.ck = os.path.join(self.tmp.name, "ck")

    def tearDown(self):
        self.tmp.cleanup()

    def start(self, ranks, out):
        cmd = [MPIEXEC, "-n", str(ranks), BIN] + MODEL + ["--checkpoint", self.ck, "--out", out, "-q"]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def test_sigusr1_stops_all_ranks_with_a_checkpoint_and_exit_75(self):
        out = os.path.join(self.tmp.name, "r")
        p = self.start(2, out)
        self.assertTrue(wait_for_panels(self.ck, 4, p), "no panels were checkpointed")
        for pid in rank_pids(p):
            os.kill(pid, signal.SIGUSR1)
        _, err = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 75, err)
        self.assertIn("--resume", err)
        self.assertTrue(os.path.exists(os.path.join(self.ck, "checkpoint.json")))
        self.assertFalse(os.path.exists(os.path.join(out, "summary.json")), "an interrupted run has no summary")
        self.assertFalse([f for f in os.listdir(self.ck) if f.endswith(".tmp")], "no half-written panel")

    def test_killed_run_resumes_on_another_rank_count_with_identical_results(self):
        out = os.path.join(self.tmp.name, "r")
        p = self.start(2, out)
        self.assertTrue(wait_for_panels(self.ck, 6, p), "no panels were checkpointed")
        os.kill(rank_pids(p)[0], signal.SIGKILL)
        p.communicate(timeout=120)
        self.assertNotEqual(p.returncode, 0)
        done = len([f for f in os.listdir(self.ck) if f.endswith(".panel")])
        # Resume on 1 rank, and compare with an uninterrupted 1-rank run. One solver for both: --solver
        # auto chooses between the sketch and LAPACK by measured time, and the two agree to rounding.
        code, _, err = dhess(1, *MODEL, "--solver", "lapack", "--checkpoint", self.ck, "--resume", "--out", out)
        self.assertEqual(code, 0, err)
        ref = os.path.join(self.tmp.name, "ref")
        code, _, err = dhess(1, *MODEL, "--solver", "lapack", "--out", ref)
        self.assertEqual(code, 0, err)
        s = json.load(open(os.path.join(out, "summary.json")))
        self.assertGreaterEqual(sum(s["hvp"]["columns_restored_from_checkpoint"]), 8 * min(done, 6) - 8)
        np.testing.assert_array_equal(np.load(os.path.join(out, "eigenvalues.npy")),
                                      np.load(os.path.join(ref, "eigenvalues.npy")))
        with h5py.File(os.path.join(out, "hessian.h5"), "r") as a, h5py.File(os.path.join(ref, "hessian.h5"), "r") as b:
            np.testing.assert_array_equal(a["hessian"][:], b["hessian"][:])

    def test_checkpoint_of_another_problem_is_refused(self):
        out = os.path.join(self.tmp.name, "r")
        code, _, err = dhess(2, *MODEL, "--eigen", "none", "--checkpoint", self.ck, "--out", out)
        self.assertEqual(code, 0, err)
        for change, word in ((["--dtype", "float32"], "dtype"), (["--params", "f2"], "n")):
            code, _, err = dhess(2, *MODEL, *change, "--checkpoint", self.ck, "--resume", "--out", out + "2")
            self.assertEqual(code, 65, err)
            self.assertIn("different problem", err)
            self.assertIn(word, err)
        code, _, err = dhess(2, *MODEL, "--checkpoint", self.ck, "--out", out + "3")
        self.assertEqual(code, 64, err)
        self.assertIn("--resume", err)

    def test_signal_during_the_eigensolver_stops_within_seconds_and_resume_goes_straight_to_it(self):
        # About 10 s of pdsyevr on 2 ranks here; the signal comes once the Hessian is kept.
        model = ["--model", "builtin:convnet:5", "--eigen", "values", "--solver", "pdsyevr", "--threads", "1"]
        out = os.path.join(self.tmp.name, "r")
        cmd = [MPIEXEC, "-n", "2", BIN] + model + ["--checkpoint", self.ck, "--out", out, "-q"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        marker = os.path.join(self.ck, "hessian.record")
        end = time.time() + 120
        while not os.path.exists(marker) and p.poll() is None and time.time() < end:
            time.sleep(0.1)
        self.assertTrue(os.path.exists(marker), "the Hessian was not kept before the eigensolver")
        time.sleep(1)
        sent = time.time()
        for pid in rank_pids(p):
            os.kill(pid, signal.SIGUSR1)
        _, err = p.communicate(timeout=60)
        self.assertLess(time.time() - sent, 10, "the ranks did not stop within seconds")
        self.assertEqual(p.returncode, 75, err)
        self.assertIn("during the eigensolver", err)
        self.assertIn("--resume", err)
        self.assertFalse(os.path.exists(os.path.join(out, "summary.json")))
        # The same grid: H from its saved shares, no product at all.
        code, stdout, err = dhess(2, *model, "--checkpoint", self.ck, "--resume", "--out", out)
        self.assertEqual(code, 0, err)
        self.assertIn("no Hessian-vector product", stdout)
        resumed = json.load(open(os.path.join(out, "summary.json")))
        self.assertTrue(resumed["hvp"]["hessian_restored_from_checkpoint"])
        # Another grid: reassembled from the kept column panels, still no product.
        other = os.path.join(self.tmp.name, "other")
        code, stdout, err = dhess(1, *model, "--checkpoint", self.ck, "--resume", "--out", other)
        self.assertEqual(code, 0, err)
        s1 = json.load(open(os.path.join(other, "summary.json")))
        self.assertEqual(sum(s1["hvp"]["columns_restored_from_checkpoint"]), s1["n"])
        ref = os.path.join(self.tmp.name, "ref")
        code, _, err = dhess(2, *model, "--out", ref)
        self.assertEqual(code, 0, err)
        want = np.load(os.path.join(ref, "eigenvalues.npy"))
        np.testing.assert_array_equal(np.load(os.path.join(out, "eigenvalues.npy")), want)
        np.testing.assert_allclose(np.load(os.path.join(other, "eigenvalues.npy")), want, rtol=0,
                                   atol=1e-12 * np.abs(want).max())

    def test_matrix_free_run_stops_after_a_phase_and_resumes_identically(self):
        spectrum = ["spectrum", "--model", "builtin:convnet:3", "--top", "3", "--bottom", "3", "--slq-probes", "4",
                    "--slq-steps", "200", "--trace-probes", "9", "--diagonal", "hutchinson", "--diagonal-probes", "8"]
        out = os.path.join(self.tmp.name, "s")
        cmd = [MPIEXEC, "-n", "2", BIN] + spectrum + ["--checkpoint", self.ck, "--out", out, "-q"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Once the Lanczos phase is kept, the signal stops the density phase at its next product.
        lanczos = os.path.join(self.ck, "lanczos.record")
        end = time.time() + 120
        while not os.path.exists(lanczos) and p.poll() is None and time.time() < end:
            time.sleep(0.05)
        for pid in rank_pids(p):
            os.kill(pid, signal.SIGUSR1)
        _, err = p.communicate(timeout=300)
        self.assertEqual(p.returncode, 75, err)
        self.assertIn("phase", err)
        self.assertIn("finished phases (lanczos", err)
        self.assertTrue(os.path.exists(lanczos))
        self.assertFalse(os.path.exists(os.path.join(out, "summary.json")))
        code, _, err = dhess(1, *spectrum, "--checkpoint", self.ck, "--resume", "--out", out)
        self.assertEqual(code, 0, err)
        ref = os.path.join(self.tmp.name, "ref")
        code, _, err = dhess(1, *spectrum, "--out", ref)
        self.assertEqual(code, 0, err)
        np.testing.assert_allclose(np.load(os.path.join(out, "eigenvalues.npy")),
                                   np.load(os.path.join(ref, "eigenvalues.npy")), rtol=1e-12)
        a = json.load(open(os.path.join(out, "summary.json")))
        b = json.load(open(os.path.join(ref, "summary.json")))
        self.assertAlmostEqual(a["trace"]["hutchpp"], b["trace"]["hutchpp"], delta=1e-9 * abs(b["trace"]["hutchpp"]))
        np.testing.assert_allclose(np.loadtxt(os.path.join(out, "slq_nodes.csv"), delimiter=",", skiprows=1),
                                   np.loadtxt(os.path.join(ref, "slq_nodes.csv"), delimiter=",", skiprows=1),
                                   rtol=1e-9, atol=1e-12)


if __name__ == "__main__":
    unittest.main(verbosity=2)
