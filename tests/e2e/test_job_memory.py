#!/usr/bin/env python3
"""The memory a rank may use is the job's, not the node's: a real cgroup with a limit (cgroup v1's
memory hierarchy, as a container or SLURM's task/cgroup plugin sets it), SLURM_MEM_PER_NODE and
SLURM_MEM_PER_CPU; a run that does not fit is refused (exit 74) naming the limit, `dhess plan`
shows where the budget came from. Ranks with different budgets agree on one plan and never hang.
"""
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhess_run import BIN, MPIEXEC, dhess, run_command  # noqa: E402

CGROUP_V1 = "/sys/fs/cgroup/memory"


@contextlib.contextmanager
def memory_cgroup(limit_bytes):
    """A cgroup v1 memory group with a limit; yields the command prefix that runs inside it."""
    path = os.path.join(CGROUP_V1, f"dhess_test_{os.getpid()}")
    try:
        os.mkdir(path)
        with open(os.path.join(path, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit_bytes))
    except OSError as e:
        raise unittest.SkipTest(f"cannot create a memory cgroup here: {e}")
    try:
        yield ["sh", "-c", f'echo $$ > {path}/cgroup.procs && exec "$@"', "sh"]
    finally:
        os.rmdir(path)


def plan_json(prefix, *args, env=None):
    code, out, err = run_command(prefix + [MPIEXEC, "-n", "1", BIN, "plan", "--json"] + list(args), env=env)
    assert code == 0, err
    return json.loads(out)


class JobMemory(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def test_cgroup_limit_is_the_budget_and_refuses_what_does_not_fit(self):
        with memory_cgroup(1_500_000_000) as inside:
            plan = plan_json(inside, "--model", "builtin:convnet:4", "--eigen", "values")
            memory = plan["memory_bytes_per_rank"]
            self.assertLessEqual(memory["available"], 1.5e9)
            self.assertIn("cgroup limit", memory["available_source"])
            out = os.path.join(self.tmp.name, "r")
            code, _, err = run_command(inside + [MPIEXEC, "-n", "1", BIN, "--model", "builtin:convnet:8", "--eigen",
                                                 "all", "--out", out])
            self.assertEqual(code, 74, err)
            self.assertIn("cgroup limit", err)
            self.assertFalse(os.path.exists(out))

    def test_slurm_mem_per_node_refuses_a_problem_past_it(self):
        out = os.path.join(self.tmp.name, "r")
        code, _, err = dhess(1, "--model", "builtin:convnet:8", "--eigen", "values", "--out", out,
                             env={"SLURM_MEM_PER_NODE": "600"})
        self.assertEqual(code, 74, err)
        self.assertIn("SLURM_MEM_PER_NODE = 600 MiB", err)

    def test_slurm_mem_per_cpu_in_the_plan(self):
        plan = plan_json([], "--model", "builtin:convnet:4", env={"SLURM_MEM_PER_CPU": "3000",
                                                                   "SLURM_CPUS_PER_TASK": "1"})
        memory = plan["memory_bytes_per_rank"]
        self.assertEqual(memory["available"], 3000 * 2**20)
        self.assertIn("SLURM_MEM_PER_CPU = 3000 MiB x 1 CPU(s) per task", memory["available_source"])

    def mpmd(self, *args):
        """Two ranks with different budgets (SLURM_MEM_PER_NODE 3000 and 6000 MiB, two ranks per node)."""
        one = ["-n", "1", "-x", "SLURM_MEM_PER_NODE=3000", BIN] + list(args)
        two = ["-n", "1", "-x", "SLURM_MEM_PER_NODE=6000", BIN] + list(args)
        return run_command([MPIEXEC] + one + [":"] + two, timeout=300)

    def test_ranks_with_different_budgets_agree_and_never_hang(self):
        code, out, err = self.mpmd("plan", "--json", "--model", "builtin:convnet:4", "--eigen", "values")
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["memory_bytes_per_rank"]["available"], 1500 * 2**20)
        dense = os.path.join(self.tmp.name, "dense")
        code, out, err = self.mpmd("--model", "builtin:convnet:4", "--eigen", "values", "--out", dense, "-q")
        self.assertEqual(code, 0, err)
        with open(os.path.join(dense, "summary.json")) as f:
            self.assertEqual(json.load(f)["memory"]["plan_bytes_per_rank"]["available"], 1500 * 2**20)
        spectrum = os.path.join(self.tmp.name, "spectrum")
        code, out, err = self.mpmd("spectrum", "--model", "builtin:convnet:4", "--top", "2", "--bottom", "0",
                                   "--slq-probes", "4", "--trace-probes", "6", "--out", spectrum, "-q")
        self.assertEqual(code, 0, err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
