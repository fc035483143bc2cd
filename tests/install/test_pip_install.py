#!/usr/bin/env python3
"""`pip install .` as a cluster user runs it: into a fresh virtual environment that already holds
a CUDA build of torch (2.14.1, the newest the project knows), with pip's default isolated build.
The dhess command must be built against that very torch -- its CUDA path configured, compiled
and linked with nvcc -- and installed beside `import dhess`, which must find it without
$DHESS_EXE and compute a Hessian equal to torch's own (on the CPU: this machine has no GPU).
And a LibTorch older than the supported range is refused when CMake configures.

  test_pip_install.py WORKDIR     (a folder for the environment, ~6 GB; reused while its torch is right)
"""
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORK = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else "pip-install")
VENV = os.path.join(WORK, "venv")
PYTHON = os.path.join(VENV, "bin", "python")
TORCH = "2.14.1"  # a CUDA build of torch: CUDA 13 wheels from PyPI

# The user's own check after installing, run by the environment's Python from outside the checkout.
USER_CHECK = textwrap.dedent("""
    import json, sys
    import torch, torch.nn as nn
    import dhess
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 2, (10,))
    with dhess.hessian(net, x, y, loss="cross_entropy", eigen="values", progress=False) as r:
        params = tuple(net.parameters())
        def loss(*p):
            return nn.functional.cross_entropy(torch.func.functional_call(net, {n: t for (n, _), t in zip(net.named_parameters(), p)}, (x,)), y)
        blocks = torch.autograd.functional.hessian(loss, params)
        H = torch.cat([torch.cat([b.reshape(a.numel(), c.numel()) for b, c in zip(row, params)], 1) for row, a in zip(blocks, params)])
        error = float(abs(torch.from_numpy(r.hessian()) - H).max() / abs(H).max())
        print(json.dumps({"error": error, "libtorch": r.summary["libtorch"], "module": dhess.__file__}))
""")


def run(command, **kw):
    return subprocess.run(command, capture_output=True, text=True, **kw)


class PipInstall(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        os.makedirs(WORK, exist_ok=True)
        if not os.path.exists(PYTHON):
            subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        have = run([PYTHON, "-c", "import torch; print(torch.__version__)"]).stdout.strip()
        if not have.startswith(TORCH):
            subprocess.run([PYTHON, "-m", "pip", "install", "--quiet", f"torch=={TORCH}", "numpy", "h5py"], check=True)
        env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": os.environ.get("DHESS_BUILD_JOBS", "2")}
        cls.install = run([PYTHON, "-m", "pip", "install", "--quiet", ROOT], env=env)

    def test_pip_install_builds_the_cuda_path_against_the_environments_torch(self):
        self.assertEqual(self.install.returncode, 0, self.install.stdout + self.install.stderr)
        version = run([os.path.join(VENV, "bin", "dhess"), "--version"])
        self.assertEqual(version.returncode, 0, version.stderr)
        self.assertIn(f"LibTorch {TORCH} with CUDA 13", version.stdout)
        linked = run(["ldd", os.path.join(VENV, "bin", "dhess")]).stdout
        self.assertIn(os.path.join(VENV, "lib"), linked, "linked against another torch than the environment's")
        self.assertIn("libtorch_cuda.so", linked)
        self.assertNotIn("not found", linked)

    def test_the_installed_package_finds_its_executable_and_matches_torch(self):
        self.assertEqual(self.install.returncode, 0, self.install.stderr)
        env = {k: v for k, v in os.environ.items() if k not in ("DHESS_EXE", "PYTHONPATH")}
        check = run([PYTHON, "-c", USER_CHECK], cwd=tempfile.gettempdir(), env=env)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        result = json.loads(check.stdout.strip().splitlines()[-1])
        self.assertTrue(result["module"].startswith(VENV), result["module"])
        self.assertIn(f"LibTorch {TORCH}", result["libtorch"])
        self.assertLessEqual(result["error"], 1e-12)

    def test_a_torch_older_than_supported_is_refused_at_configure(self):
        # A LibTorch package config that says 1.13.1, as Debian's libtorch-dev or an old pip torch does.
        with tempfile.TemporaryDirectory() as old:
            with open(os.path.join(old, "TorchConfig.cmake"), "w") as f:
                f.write("set(TORCH_LIBRARIES torch)\n")
            with open(os.path.join(old, "TorchConfigVersion.cmake"), "w") as f:
                f.write('set(PACKAGE_VERSION "1.13.1")\nset(PACKAGE_VERSION_COMPATIBLE TRUE)\n')
            configure = run(["cmake", "-S", ROOT, "-B", os.path.join(old, "build"), f"-DTorch_DIR={old}",
                             f"-DDHESS_PYTHON={PYTHON}", "-DDHESS_BUILD_TESTS=OFF"])
        self.assertNotEqual(configure.returncode, 0)
        self.assertIn("needs torch >= 2.4", configure.stderr)
        self.assertIn("'1.13.1'", configure.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
