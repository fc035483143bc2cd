"""Runs the dhess command under mpiexec for the end-to-end tests."""
import os
import subprocess

BIN = os.environ.get("DHESS_BIN", "dhess")
MPIEXEC = os.environ.get("DHESS_MPIEXEC", "mpiexec")
ORACLE = os.environ.get("DHESS_ORACLE_DIR", "oracle")


def oracle(name):
    return os.path.join(ORACLE, name)


def dhess(ranks, *args, timeout=600):
    """Returns (exit code, stdout, stderr) of `mpiexec -n ranks dhess args...`."""
    cmd = [MPIEXEC, "-n", str(ranks), BIN] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr
