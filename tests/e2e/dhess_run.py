"""Runs the dhess command under mpiexec for the end-to-end tests."""
import argparse
import os
import signal
import subprocess
import sys
import unittest

BIN = os.environ.get("DHESS_BIN", "dhess")
MPIEXEC = os.environ.get("DHESS_MPIEXEC", "mpiexec")
ORACLE = os.environ.get("DHESS_ORACLE_DIR", "oracle")


def oracle(name):
    return os.path.join(ORACLE, name)


def run_command(cmd, timeout=600, env=None):
    """(exit code, stdout, stderr) of `cmd`. A run that outlives `timeout` fails the test and is
    killed with its whole process group: a hung rank must not outlive the test."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=None if env is None else {**os.environ, **env})
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError(f"hung: no exit within {timeout} s\n{' '.join(cmd)}\nstdout:\n{out}\nstderr:\n{err}")
    return p.returncode, out, err


def dhess(ranks, *args, timeout=600, env=None):
    """(exit code, stdout, stderr) of `mpiexec -n ranks dhess args...`."""
    return run_command([MPIEXEC, "-n", str(ranks), BIN] + [str(a) for a in args], timeout, env)


def descendants(root):
    """PIDs of the processes below `root` (mpiexec: its daemons and ranks), read from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            found.append(child)
    return found


def main_with_ranks(module):
    """unittest.main() after taking `--ranks P` (the MPI ranks of every dhess run) into module.RANKS."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", type=int, default=1)
    args, rest = parser.parse_known_args()
    module.RANKS = args.ranks
    unittest.main(module=module, argv=[sys.argv[0]] + rest, verbosity=2)
