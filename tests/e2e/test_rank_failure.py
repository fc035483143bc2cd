#!/usr/bin/env python3
"""No hangs: when one rank fails alone, or dies, the whole job ends by itself.

- a rank that fails alone with an error every rank can agree on: mpiexec's MPMD form
  (`A : B`) gives rank 1 a data file that does not exist, or a disk that fills up under
  rank 1 alone in the middle of writing hessian.h5 (an LD_PRELOAD shim, tests/e2e/fail_writes.c,
  makes its writes fail with ENOSPC; nothing in dhess knows about it);
- a rank killed with SIGKILL in the middle of a run: mpiexec must end the job, non-zero,
  without summary.json, within KILL_EXIT_LIMIT seconds.

Usage: .venv/bin/python test_rank_failure.py            (the unit tests)
       .venv/bin/python test_rank_failure.py --kill-loop 10   (the kill test N times, with a report)
"""
import functools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dhess_run  # noqa: E402
from dhess_run import BIN, MPIEXEC, descendants  # noqa: E402
from test_bad_inputs import RESULT_NAMES, stderr_lines  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
KILL_EXIT_LIMIT = 30  # seconds from SIGKILL to the end of the job
# Must outlast the latest kill (20 s): convnet:8 (n = 10,565) runs about 30 s on 4 ranks sharing
# 2 cores, and the kills land in both the HVP and the eigensolver phases. --solver elpa: --solver auto
# would find its rank (672) with the sketch in a couple of seconds and end the job before most kills.
KILL_PROBLEM = ["--model", "builtin:convnet:8", "--eigen", "values", "--solver", "elpa", "-q"]


run = functools.partial(dhess_run.run_command, timeout=120)


def rank_processes(root):
    """{MPI rank: pid} of the processes below `root` that carry OMPI_COMM_WORLD_RANK."""
    ranks = {}
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        if b"OMPI_COMM_WORLD_RANK" in env:
            ranks[int(env[b"OMPI_COMM_WORLD_RANK"])] = pid
    return ranks


def kill_one_rank(out, ranks=4, after=None, victim=None):
    """Starts `mpiexec -n ranks dhess KILL_PROBLEM`, SIGKILLs one rank `after` seconds in.
    Returns a dict: killed rank, kill time, seconds from the kill to the job's end, exit code, stderr."""
    rng = random.Random()
    after = rng.uniform(2, 20) if after is None else after
    cmd = [MPIEXEC, "-n", str(ranks), BIN] + KILL_PROBLEM + ["--out", out]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    start = time.monotonic()
    try:
        procs = {}
        while time.monotonic() - start < after or len(procs) < ranks:
            if p.poll() is not None:
                raise AssertionError(f"the job ended before the kill ({time.monotonic() - start:.1f} s, exit "
                                     f"{p.returncode}): {p.stderr.read()}")
            procs = rank_processes(p.pid)
            time.sleep(0.1)
        victim = rng.randrange(ranks) if victim is None else victim
        os.kill(procs[victim], signal.SIGKILL)
        killed = time.monotonic()
        try:
            _, err = p.communicate(timeout=KILL_EXIT_LIMIT + 30)
        except subprocess.TimeoutExpired:
            err = "(still running)"
        ended = time.monotonic()
        return {"victim": victim, "kill_at": killed - start, "exit_after": ended - killed,
                "code": p.returncode, "stderr": err}
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


class RankFailure(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fixtures = tempfile.TemporaryDirectory()
        d = cls.fixtures.name
        torch.manual_seed(11)
        torch.jit.script(nn.Linear(40, 49).double().eval()).save(os.path.join(d, "model.pt"))
        torch.save((torch.randn(10, 40, dtype=torch.float64), torch.randn(10, 49, dtype=torch.float64)),
                   os.path.join(d, "data.pt"))
        cls.shim = os.path.join(d, "fail_writes.so")
        p = subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", cls.shim, os.path.join(HERE, "fail_writes.c"),
                            "-ldl"], capture_output=True, text=True)
        if p.returncode != 0:
            cls.shim = None
            cls.shim_error = p.stderr

    @classmethod
    def tearDownClass(cls):
        cls.fixtures.cleanup()

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.out = os.path.join(self.tmp.name, "out")

    def tearDown(self):
        self.tmp.cleanup()

    def args(self, data=None):
        return ["--model", os.path.join(self.fixtures.name, "model.pt"), "--data",
                data or os.path.join(self.fixtures.name, "data.pt"), "--loss", "mse", "--out", self.out]

    def assert_no_result(self):
        if os.path.isdir(self.out):
            self.assertEqual(sorted(set(os.listdir(self.out)) & RESULT_NAMES), [], os.listdir(self.out))

    def assert_one_error(self, code, rc, err, *words):
        self.assertEqual(rc, code, err)
        lines = stderr_lines(err)
        self.assertEqual(len(lines), 1, "want one 'dhess: error:' line and nothing else:\n" + err)
        self.assertTrue(lines[0].startswith("dhess: error: "), err)
        for w in words:
            self.assertIn(w, lines[0])
        self.assert_no_result()

    def test_data_file_missing_on_rank_1_only(self):
        missing = os.path.join(self.tmp.name, "only_rank_0_has_it.pt")
        cmd = [MPIEXEC, "-n", "1", BIN] + self.args() + [":", "-n", "1", BIN] + self.args(missing)
        rc, _, err = run(cmd)
        self.assert_one_error(65, rc, err, missing, "does not exist", "(on rank 1)")

    def test_disk_full_on_rank_1_only_while_writing_hessian_h5(self):
        if not self.shim:
            self.skipTest("no C compiler for the write-failure shim: " + self.shim_error)
        env = {"LD_PRELOAD": self.shim, "DHESS_FAIL_WRITES": "hessian.h5.partial", "DHESS_FAIL_RANK": "1",
               "DHESS_FAIL_FROM": "8192"}
        for ranks in (2, 4):
            with self.subTest(ranks=ranks):
                cmd = [MPIEXEC, "-n", str(ranks), BIN] + self.args() + ["--save-hessian", "--eigen", "none"]
                rc, _, err = run(cmd, env=env)
                self.assert_one_error(74, rc, err, "hessian.h5", "No space left on device", "(on rank 1)")
                self.assertFalse(os.path.exists(os.path.join(self.out, "hessian.h5.partial")),
                                 "the unusable partial file is removed")

    def test_disk_full_on_every_rank_while_writing_eigenvectors_h5(self):
        if not self.shim:
            self.skipTest("no C compiler for the write-failure shim: " + self.shim_error)
        env = {"LD_PRELOAD": self.shim, "DHESS_FAIL_WRITES": "eigenvectors.h5.partial", "DHESS_FAIL_FROM": "4096"}
        cmd = [MPIEXEC, "-n", "3", BIN] + self.args() + ["--eigen", "top:300"]
        rc, _, err = run(cmd, env=env)
        self.assert_one_error(74, rc, err, "eigenvectors.h5", "No space left on device")

    def test_a_killed_rank_ends_the_job(self):
        r = kill_one_rank(self.out, after=random.uniform(2, 12))
        what = f"rank {r['victim']} killed at {r['kill_at']:.1f} s"
        self.assertLessEqual(r["exit_after"], KILL_EXIT_LIMIT, f"{what}: the job did not end:\n{r['stderr']}")
        self.assertNotEqual(r["code"], 0, what)
        self.assertFalse(os.path.exists(os.path.join(self.out, "summary.json")), what)


def kill_loop(times):
    results = []
    for i in range(times):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "out")
            r = kill_one_rank(out)
            r["summary_json"] = os.path.exists(os.path.join(out, "summary.json"))
        r["passed"] = r["exit_after"] <= KILL_EXIT_LIMIT and r["code"] != 0 and not r["summary_json"]
        print(f"run {i + 1}: killed rank {r['victim']} at {r['kill_at']:.1f} s, job ended {r['exit_after']:.2f} s "
              f"later, exit {r['code']}, summary.json {'present' if r['summary_json'] else 'absent'}: "
              f"{'pass' if r['passed'] else 'FAIL'}", flush=True)
        results.append(r)
    passed = sum(r["passed"] for r in results)
    print(json.dumps({"runs": times, "passed": passed, "max_exit_seconds": max(r["exit_after"] for r in results),
                      "exit_codes": sorted({r["code"] for r in results})}))
    return passed == times


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--kill-loop":
        sys.exit(0 if kill_loop(int(sys.argv[2])) else 1)
    unittest.main(verbosity=2)
