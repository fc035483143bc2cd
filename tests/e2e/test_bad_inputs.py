#!/usr/bin/env python3
"""Bad inputs end to end: one test per row of the bad-input table (README.md, "Exit codes and errors").

Every row runs `mpiexec -n 2 dhess ...` (one rank where the row is about one rank) and checks
what a user sees: the exit code class (64 usage, 65 input, 74 resource), exactly one
`dhess: error:` line on stderr naming the file, parameter, shape or value at fault, no other
noise (torch tracebacks, HDF5 stacks, MPI_ABORT banners: an agreed error exits without
MPI_Abort), and no summary.json or other finished-looking result in --out.

The bad models and data are written by Python torch (write_fixtures); nothing here uses dhess
to make its inputs. setUpClass writes them into a temporary directory, or reuses the directory
$DHESS_BAD_INPUTS_DIR when `test_bad_inputs.py --write-fixtures DIR` filled it (ctest does, so
that each row can run as its own ctest without paying for torch again).

Usage: .venv/bin/python test_bad_inputs.py [BadInputs.test_ROW ...]
       .venv/bin/python test_bad_inputs.py --write-fixtures DIR
"""
import contextlib
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dhess_run  # noqa: E402

RANKS = 2
# Everything a finished run may leave in --out (OutputDir::result_names()).
RESULT_NAMES = {"summary.json", "eigenvalues.npy", "eigenvectors.h5", "hessian.h5", "layout.json",
                "eigenvector_shares.npy", "spectrum.png", "density.csv", "slq_nodes.csv", "diagonal.npy",
                "diagonal.h5"}
# mpiexec's own report that a process exited non-zero: Open MPI prints it for every failing
# program (`mpiexec -q` hides it). It is not dhess's output, so it is not counted as noise.
MPIEXEC_REPORT = re.compile(
    r"-{20,}\n(Primary job\s+terminated normally.*?\n-{20,}\n-{20,}\n)?mpiexec detected that one or more "
    r"processes exited with non-zero status.*?\n-{20,}\n", re.S)


def stderr_lines(err):
    """stderr without mpiexec's non-zero-exit report, as non-empty lines."""
    return [line for line in MPIEXEC_REPORT.sub("", err).splitlines() if line.strip()]


# A bad input must end the run within seconds: a tighter bound than the other end-to-end tests.
dhess = functools.partial(dhess_run.dhess, timeout=120)


# ---- models and data written by Python torch --------------------------------------------------

def write_fixtures(d):
    """Writes every model and data file the rows use into directory d."""
    import torch  # here, not at the top: a row run alone from ctest reuses the files
    import torch.nn as nn

    class Linear(nn.Module):
        def __init__(self, d_in, d_out):
            super().__init__()
            self.l = nn.Linear(d_in, d_out)

        def forward(self, x):
            return self.l(x)

    class NoParams(nn.Module):
        def forward(self, x):
            return x * 2

    class LogSoftmax(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(4, 3)

        def forward(self, x):
            return torch.log_softmax(self.l(x), dim=1)

    class NanGradient(nn.Module):
        """Finite loss, NaN gradient: d/dw [0 * sqrt(w)] at w = 0 is 0 * inf."""

        def __init__(self):
            super().__init__()
            self.l = nn.Linear(4, 2)
            self.w = nn.Parameter(torch.zeros(3))

        def forward(self, x):
            return self.l(x) + 0 * torch.sqrt(self.w).sum()

    class NanHessian(nn.Module):
        """Finite loss and gradient, NaN Hessian: d2/dw2 |w|^1.5 at w = 0 is 0.75 |w|^-0.5 sign(w)^2 = inf * 0."""

        def __init__(self):
            super().__init__()
            self.l = nn.Linear(4, 2)
            self.w = nn.Parameter(torch.zeros(3))

        def forward(self, x):
            return self.l(x) + (self.w.abs() ** 1.5).sum()

    class Pdist(nn.Module):
        """A diversity term on hidden features through torch.pdist, which torch differentiates once only."""

        def __init__(self):
            super().__init__()
            self.l = nn.Linear(4, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x):
            h = torch.tanh(self.l(x))
            return self.out(h) + torch.pdist(h).mean()

    class Encoder(nn.Module):
        """An eval-mode TransformerEncoderLayer: traced without gradients it records the fused fast
        path (aten::_transformer_encoder_layer_fwd), which autograd cannot differentiate at all."""

        def __init__(self):
            super().__init__()
            self.enc = nn.TransformerEncoderLayer(4, nhead=2, dim_feedforward=8, batch_first=True)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.enc(x).mean(1))

    class Raises(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(4, 2)

        def forward(self, x):
            if x.dim() != 2:
                raise ValueError("x must be 2-D")
            return self.l(x)

    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 4, 3)

        def forward(self, x):
            return self.c(x).flatten(1)

    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = nn.Linear(3, 4)
            self.spare = nn.Linear(2, 2)  # never called: its rows and columns of H are zero
            self.l2 = nn.Linear(4, 2)

        def forward(self, x):
            return self.l2(torch.tanh(self.l1(x)))

    class SmallConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(2, 4, 3, padding=1)
            self.l = nn.Linear(4, 3)

        def forward(self, x):
            return self.l(torch.tanh(self.c(x)).mean((2, 3)))

    class BatchNormNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(4, 3)
            self.bn = nn.BatchNorm1d(3)
            self.o = nn.Linear(3, 2)

        def forward(self, x):
            return self.o(torch.relu(self.bn(self.l(x))))

    class SumOfLosses(nn.Module):
        """--loss none, but forward returns the sum over samples, not the mean."""

        def __init__(self):
            super().__init__()
            self.l = nn.Linear(4, 2)

        def forward(self, x, y):
            return ((self.l(x) - y) ** 2).sum()

    class Dropped(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(4, 2)
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return self.l(self.drop(x))

    def script(module, path):
        torch.jit.script(module.double().eval()).save(path)

    def write_all(d):
        torch.manual_seed(7)
        p = lambda name: os.path.join(d, name)  # noqa: E731
        script(Linear(4, 2), p("linear.pt"))
        torch.save((torch.randn(30, 4, dtype=torch.float64), torch.randn(30, 2, dtype=torch.float64)),
                   p("linear_data.pt"))
        # The same shapes with other numbers: what a checkpoint of another problem looks like.
        script(Linear(4, 2), p("linear_other.pt"))
        torch.save((torch.randn(30, 4, dtype=torch.float64), torch.randn(30, 2, dtype=torch.float64)),
                   p("other_data.pt"))
        # A larger model (n = 630) for the full-disk rows: hessian.h5 ~3 MB, eigenvalues.npy ~5 KB.
        script(Linear(20, 30), p("wide.pt"))
        torch.save((torch.randn(16, 20, dtype=torch.float64), torch.randn(16, 30, dtype=torch.float64)),
                   p("wide_data.pt"))
        with open(p("empty.pt"), "wb"):
            pass
        with open(p("wide.pt"), "rb") as f:
            whole = f.read()
        with open(p("truncated.pt"), "wb") as f:
            f.write(whole[:len(whole) // 2])
        torch.save(torch.zeros(3, 4), p("tensor.pt"))  # torch.save'd tensor, not TorchScript
        with open(p("random.bin"), "wb") as f:
            f.write(np.random.default_rng(3).bytes(4096))
        script(NoParams(), p("noparams.pt"))
        torch.save(torch.randn(30, 4, dtype=torch.float64), p("single_tensor.pt"))
        script(Linear(100, 3), p("wants100.pt"))
        torch.save((torch.randn(6, 75, dtype=torch.float64), torch.randint(0, 3, (6,))), p("inputs75.pt"))
        script(LogSoftmax(), p("logsoftmax.pt"))
        torch.save((torch.randn(6, 4, dtype=torch.float64), torch.randn(6, dtype=torch.float64)),
                   p("float_targets.pt"))
        script(Linear(4, 3), p("classes3.pt"))
        torch.save((torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 7, 1, 0])), p("class7.pt"))
        torch.save((torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, -100, 2, -3, 1, 0])), p("class_m3.pt"))
        torch.save((torch.randn(6, 4, dtype=torch.float64), torch.full((6,), -100)), p("all_ignored.pt"))
        x = torch.randn(30, 4, dtype=torch.float64)
        x[3, 1] = float("nan")
        x[5, 0] = float("inf")
        torch.save((x, torch.randn(30, 2, dtype=torch.float64)), p("nan_inputs.pt"))
        x = torch.randn(30, 4, dtype=torch.float64)
        x[7, 2] = 1e39  # finite in float64, beyond float32
        torch.save((x, torch.randn(30, 2, dtype=torch.float64)), p("huge_inputs.pt"))
        inf = Linear(4, 2)
        with torch.no_grad():
            inf.l.weight[0, 0] = float("inf")
        script(inf, p("inf_param.pt"))
        script(NanGradient(), p("nan_grad.pt"))
        script(NanHessian(), p("nan_hessian.pt"))
        script(Raises(), p("raises.pt"))
        script(Pdist(), p("pdist.pt"))
        with torch.no_grad():
            torch.jit.trace(Encoder().double().eval(), torch.randn(3, 5, 4, dtype=torch.float64)).save(
                p("encoder_traced_without_grad.pt"))
        torch.save((torch.randn(6, 5, 4, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)),
                   p("sequences.pt"))
        torch.save((torch.randn(100, 4, dtype=torch.float64), torch.randn(100, 2, dtype=torch.float64)),
                   p("linear_data_100.pt"))
        torch.save((torch.randn(30, 4, 2, dtype=torch.float64), torch.randn(30, 2, dtype=torch.float64)),
                   p("inputs_3d.pt"))
        script(Conv(), p("conv.pt"))
        torch.save((torch.randn(6, 3, 5, 5, dtype=torch.float64), torch.randn(6, 36, dtype=torch.float64)),
                   p("rgb_images.pt"))
        script(Unused(), p("unused.pt"))
        torch.save((torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64)),
                   p("unused_data.pt"))

        script(SmallConv(), p("small_conv.pt"))
        torch.save((torch.randn(2000, 2, 24, 24, dtype=torch.float64), torch.randint(0, 3, (2000,))),
                   p("many_images.pt"))
        script(BatchNormNet(), p("batchnorm.pt"))
        script(SumOfLosses(), p("sum_of_losses.pt"))
        script(Dropped(), p("dropout.pt"))

    write_all(d)
    with open(os.path.join(d, "complete"), "w") as f:
        f.write("ok\n")


class BadInputs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        shared = os.environ.get("DHESS_BAD_INPUTS_DIR")
        cls.own = None
        if shared and os.path.exists(os.path.join(shared, "complete")):
            cls.dir = shared
        else:
            cls.own = tempfile.TemporaryDirectory()
            cls.dir = cls.own.name
            write_fixtures(cls.dir)

    @classmethod
    def tearDownClass(cls):
        if cls.own:
            cls.own.cleanup()

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.out = os.path.join(self.tmp.name, "out")

    def tearDown(self):
        self.tmp.cleanup()

    def f(self, name):
        return os.path.join(self.dir, name)

    def linear(self, **kw):
        """Arguments of a good run on the small linear model, with some replaced."""
        args = {"--model": self.f("linear.pt"), "--data": self.f("linear_data.pt"), "--loss": "mse"}
        args.update(kw)
        return [a for k, v in args.items() if v is not None for a in (k, v)]

    def assert_no_result(self, out):
        if not os.path.isdir(out):
            return
        finished = sorted(set(os.listdir(out)) & RESULT_NAMES)
        self.assertEqual(finished, [], f"--out {out} holds files that look like a finished result")

    def expect_error(self, code, args, *names, ranks=RANKS, out=None, env=None):
        """Runs dhess, checks the exit code, the one error line and its contents; returns the line."""
        out = out or self.out
        args = list(args) + (["--out", out] if "--out" not in args else [])
        rc, stdout, stderr = dhess(ranks, *args, env=env)
        context = (f"\nmpiexec -n {ranks} dhess {' '.join(map(str, args))}\nexit {rc}\nstdout:\n{stdout}"
                   f"\nstderr:\n{stderr}")
        self.assertEqual(rc, code, "exit code" + context)
        lines = stderr_lines(stderr)
        errors = [line for line in lines if line.startswith("dhess: error: ")]
        self.assertEqual(len(errors), 1, "want exactly one 'dhess: error:' line" + context)
        noise = [line for line in lines if not line.startswith(("dhess: error: ", "dhess: warning: ", "dhess: note: "))]
        self.assertEqual(noise, [], "stderr noise besides dhess's own lines" + context)
        for name in names:
            self.assertIn(str(name), errors[0], "the message must name " + str(name) + context)
        self.assert_no_result(out)
        if os.environ.get("DHESS_RECORD_ERRORS"):  # material for the README table
            with open(os.environ["DHESS_RECORD_ERRORS"], "a") as f:
                f.write(json.dumps({"row": self.id().rsplit(".", 1)[1], "code": rc, "line": errors[0]}) + "\n")
        return errors[0]

    # ---- the model file --------------------------------------------------------------------------

    def test_model_file_missing(self):
        missing = os.path.join(self.tmp.name, "no_such_model.pt")
        self.expect_error(65, self.linear(**{"--model": missing}), missing, "does not exist")

    def test_model_file_empty(self):
        self.expect_error(65, self.linear(**{"--model": self.f("empty.pt")}), self.f("empty.pt"), "empty")

    def test_model_file_truncated(self):
        self.expect_error(65, self.linear(**{"--model": self.f("truncated.pt")}), self.f("truncated.pt"),
                          "TorchScript")

    def test_model_file_is_a_saved_tensor(self):
        self.expect_error(65, self.linear(**{"--model": self.f("tensor.pt")}), self.f("tensor.pt"), "TorchScript")

    def test_model_file_is_random_bytes(self):
        self.expect_error(65, self.linear(**{"--model": self.f("random.bin")}), self.f("random.bin"), "TorchScript")

    def test_model_file_is_a_directory(self):
        self.expect_error(65, self.linear(**{"--model": self.tmp.name}), self.tmp.name, "directory")

    def test_model_without_parameters(self):
        self.expect_error(65, self.linear(**{"--model": self.f("noparams.pt")}), self.f("noparams.pt"),
                          "no parameters")

    # ---- the data file ---------------------------------------------------------------------------

    def test_data_file_missing(self):
        missing = os.path.join(self.tmp.name, "no_such_data.pt")
        self.expect_error(65, self.linear(**{"--data": missing}), missing, "does not exist")

    def test_data_file_corrupt(self):
        self.expect_error(65, self.linear(**{"--data": self.f("random.bin")}), self.f("random.bin"), "torch.save")

    def test_data_file_truncated_model_archive(self):
        self.expect_error(65, self.linear(**{"--data": self.f("truncated.pt")}), self.f("truncated.pt"))

    def test_data_is_a_single_tensor(self):
        self.expect_error(65, self.linear(**{"--data": self.f("single_tensor.pt")}), self.f("single_tensor.pt"),
                          "single tensor", "[30,4]", "(inputs, targets)")

    def test_inputs_shape_rejected_by_model(self):
        line = self.expect_error(65, ["--model", self.f("wants100.pt"), "--data", self.f("inputs75.pt"), "--loss",
                                      "cross_entropy"], self.f("inputs75.pt"), "[6,75]",
                                 "mat1 and mat2 shapes cannot be multiplied (6x75 and 100x3)")
        self.assertNotIn("Traceback", line)

    def test_model_forward_raises(self):
        # TorchScript wraps the exception in an interpreter traceback; one line of it is kept.
        self.expect_error(65, self.linear(**{"--model": self.f("raises.pt"), "--data": self.f("inputs_3d.pt")}),
                          self.f("inputs_3d.pt"), "[30,4,2]", "ValueError: x must be 2-D")

    def test_image_channels_rejected_by_conv(self):
        line = self.expect_error(65, self.linear(**{"--model": self.f("conv.pt"), "--data": self.f("rgb_images.pt")}),
                                 "[6,3,5,5]", "expected input[6, 3, 5, 5] to have 1 channels, but got 3")
        self.assertNotIn("Traceback", line)

    def test_float_targets_with_nll(self):
        self.expect_error(65, ["--model", self.f("logsoftmax.pt"), "--data", self.f("float_targets.pt"), "--loss",
                               "nll"], "--loss nll", "integer class targets", self.f("float_targets.pt"), "Double")

    def test_class_out_of_range_for_cross_entropy(self):
        self.expect_error(65, ["--model", self.f("classes3.pt"), "--data", self.f("class7.pt"), "--loss",
                               "cross_entropy"], "class 7", "3 classes", self.f("class7.pt"))

    def test_negative_class_other_than_ignore_index(self):
        self.expect_error(65, ["--model", self.f("classes3.pt"), "--data", self.f("class_m3.pt"), "--loss",
                               "cross_entropy"], "class -3", "3 classes", self.f("class_m3.pt"))

    def test_every_class_target_ignored(self):
        self.expect_error(65, ["--model", self.f("classes3.pt"), "--data", self.f("all_ignored.pt"), "--loss",
                               "cross_entropy"], "every target", "-100", self.f("all_ignored.pt"))

    def test_targets_shape_mismatch_for_mse(self):
        self.expect_error(65, ["--model", self.f("classes3.pt"), "--data", self.f("linear_data.pt"), "--loss", "mse"],
                          "[30,3]", "[30,2]")

    def test_nan_and_inf_in_inputs(self):
        self.expect_error(65, self.linear(**{"--data": self.f("nan_inputs.pt")}), self.f("nan_inputs.pt"),
                          "2 NaN or Inf values, the first at [3,1]")

    def test_inputs_beyond_float32(self):
        self.expect_error(65, self.linear(**{"--data": self.f("huge_inputs.pt"), "--dtype": "float32"}),
                          self.f("huge_inputs.pt"), "float32", "the first at [7,2]")

    # ---- the loss and its derivatives ------------------------------------------------------------

    def test_loss_none_on_a_model_returning_a_vector(self):
        self.expect_error(65, self.linear(**{"--loss": "none"}), "--loss none", "[30,2]", "not a scalar")

    def test_infinite_loss_at_the_parameters(self):
        self.expect_error(65, self.linear(**{"--model": self.f("inf_param.pt")}), "loss is inf",
                          "parameter 'l.weight' holds 1 NaN/Inf value")

    def test_nan_gradient(self):
        self.expect_error(65, self.linear(**{"--model": self.f("nan_grad.pt")}), "gradient of parameter 'w' [3]",
                          "3 NaN or Inf entries", "loss")

    def test_nan_hessian_at_finite_gradient(self):
        # Caught before the eigensolver (which would print ScaLAPACK's own complaints and fail on one rank
        # after another): the Hessian columns of parameter 'w' are NaN.
        self.expect_error(65, self.linear(**{"--model": self.f("nan_hessian.pt")}), "Hessian", "NaN")

    def test_op_without_a_second_derivative(self):
        for data in ("linear_data.pt", "linear_data_100.pt"):  # 100: met first by the memory probe of the first pass
            self.expect_error(65, self.linear(**{"--model": self.f("pdist.pt"), "--data": self.f(data)}),
                              "no second derivative", "_pdist_backward", "--params")

    def test_fused_attention_fast_path_traced_without_gradients(self):
        self.expect_error(65, self.linear(**{"--model": self.f("encoder_traced_without_grad.pt"),
                                             "--data": self.f("sequences.pt")}),
                          "_transformer_encoder_layer_fwd", "torch.no_grad", "torch.jit.script")

    def test_params_matching_nothing(self):
        self.expect_error(64, self.linear(**{"--params": "^conv"}), "--params '^conv'", "l.weight")

    def test_params_not_a_regex(self):
        self.expect_error(64, self.linear(**{"--params": "l.(weight"}), "--params 'l.(weight'")

    def test_unused_parameter_gives_a_warning_and_zero_rows(self):
        args = ["--model", self.f("unused.pt"), "--data", self.f("unused_data.pt"), "--loss", "mse",
                "--save-hessian", "--eigen", "values", "--out", self.out]
        rc, stdout, stderr = dhess(RANKS, *args)
        self.assertEqual(rc, 0, stdout + stderr)
        lines = stderr_lines(stderr)
        self.assertEqual(sorted(lines), sorted(
            f"dhess: warning: the loss does not use parameter '{name}': its rows and columns of H are exactly zero"
            for name in ("spare.weight", "spare.bias")), stderr)
        with open(os.path.join(self.out, "layout.json")) as f:
            layout = {p["name"]: p for p in json.load(f)["parameters"]}
        with h5py.File(os.path.join(self.out, "hessian.h5"), "r") as f:
            H = f["hessian"][:]
        for name in ("spare.weight", "spare.bias"):
            o, k = layout[name]["offset"], layout[name]["size"]
            self.assertTrue(np.all(H[o:o + k, :] == 0), name + " rows")
            self.assertTrue(np.all(H[:, o:o + k] == 0), name + " columns")
        used = layout["l1.weight"]
        self.assertGreater(np.abs(H[used["offset"]:used["offset"] + used["size"]]).max(), 0)
        with open(os.path.join(self.out, "summary.json")) as f:
            summary = json.load(f)
        self.assertEqual(sorted(summary["model"]["unused_parameters"]), ["spare.bias", "spare.weight"])

    # ---- flags -----------------------------------------------------------------------------------

    def test_grid_does_not_match_rank_count(self):
        self.expect_error(64, self.linear(**{"--grid": "2x2"}), "--grid 2x2", "4 ranks", "2")

    def test_grid_malformed(self):
        self.expect_error(64, self.linear(**{"--grid": "two"}), "--grid 'two'")

    def test_block_zero(self):
        self.expect_error(64, self.linear(**{"--block": "0"}), "--block", "0")

    def test_block_larger_than_n(self):
        self.expect_error(64, self.linear(**{"--block": "11"}), "--block 11", "n = 10")

    def test_unknown_eigen(self):
        self.expect_error(64, self.linear(**{"--eigen": "most"}), "--eigen 'most'")

    def test_unknown_loss(self):
        self.expect_error(64, self.linear(**{"--loss": "hinge"}), "--loss 'hinge'")

    def test_unknown_dtype(self):
        self.expect_error(64, self.linear(**{"--dtype": "float16"}), "--dtype 'float16'")

    def test_unknown_solver(self):
        self.expect_error(64, self.linear(**{"--solver": "magma"}), "--solver 'magma'")

    def test_lapack_solver_on_two_ranks(self):
        self.expect_error(64, self.linear(**{"--solver": "lapack"}), "--solver lapack", "2 ranks")

    def test_elpa_solver_with_a_block_it_does_not_take(self):
        self.expect_error(64, self.linear(**{"--solver": "elpa", "--block": "3"}), "--solver elpa", "block 3")

    def test_lowrank_solver_asked_for_all_eigenpairs(self):
        self.expect_error(64, self.linear(**{"--solver": "lowrank", "--eigen": "all"}), "--solver lowrank",
                          "null space")

    def test_lowrank_solver_in_float32(self):
        self.expect_error(64, self.linear(**{"--solver": "lowrank", "--dtype": "float32"}), "--solver lowrank",
                          "float64")

    def test_unknown_hvp_mode(self):
        self.expect_error(64, self.linear(**{"--hvp-mode": "fast"}), "--hvp-mode 'fast'")

    def test_cuda_without_a_gpu(self):
        import shutil
        if shutil.which("nvidia-smi"):
            self.skipTest("this machine has a GPU")
        self.expect_error(64, self.linear(**{"--device": "cuda"}), "--device cuda", "no CUDA device")

    def test_top_k_larger_than_n(self):
        self.expect_error(64, self.linear(**{"--eigen": "top:11"}), "--eigen top:11", "n = 10")

    def test_unknown_flag(self):
        self.expect_error(64, self.linear(**{"--eigenvalues": "all"}), "--eigenvalues")

    def test_missing_loss(self):
        self.expect_error(64, self.linear(**{"--loss": None}), "--loss is required")

    def test_unknown_builtin(self):
        self.expect_error(64, ["--model", "builtin:resnet"], "builtin:resnet")

    # ---- samples coupled across micro-batches or data shards -------------------------------------

    def test_batch_norm_in_train_mode_with_micro_batches(self):
        self.expect_error(64, self.linear(**{"--model": self.f("batchnorm.pt"), "--batch-size": "10"}) +
                          ["--train-mode"],
                          "samples are coupled", "--batch-size 10", "BatchNorm in train mode", "eval mode")

    def test_batch_norm_in_train_mode_sharded_by_spectrum(self):
        self.expect_error(64, ["spectrum"] + self.linear(**{"--model": self.f("batchnorm.pt")}) + ["--train-mode"],
                          "samples are coupled", "data shards of dhess spectrum on 2 ranks", "BatchNorm")

    def test_loss_none_returning_a_sum_with_micro_batches(self):
        self.expect_error(64, self.linear(**{"--model": self.f("sum_of_losses.pt"), "--loss": "none",
                                             "--batch-size": "10"}),
                          "samples are coupled", "--loss none", "mean loss over its samples")

    def test_random_forward_in_train_mode_with_micro_batches(self):
        self.expect_error(64, self.linear(**{"--model": self.f("dropout.pt"), "--batch-size": "10"}) +
                          ["--train-mode"], "random", "Dropout")

    # ---- a flag of the other command ---------------------------------------------------------------

    def test_dense_flag_given_to_spectrum(self):
        self.expect_error(64, ["spectrum"] + self.linear(**{"--solver": "elpa"}), "--solver", "not of dhess spectrum")

    def test_spectrum_flag_given_to_the_dense_run(self):
        self.expect_error(64, self.linear(**{"--top": "3"}), "--top", "dhess spectrum", "not of the dense run")

    def test_spectrum_eigen_values(self):
        self.expect_error(64, ["spectrum"] + self.linear(**{"--eigen": "values"}), "--eigen values", "dense run",
                          "top:K")

    # ---- memory ----------------------------------------------------------------------------------

    def test_memory_per_rank_too_small(self):
        self.expect_error(74, self.linear(**{"--mem-per-rank": "1000"}), "n = 10", "1.00 KB", "per rank")

    def test_job_memory_below_the_problem(self):
        # SLURM's --mem=600 on a node: the job's limit, not the node's free memory, is the budget.
        self.expect_error(74, ["--model", "builtin:convnet:8", "--eigen", "values"], "n = 10565 needs",
                          "SLURM_MEM_PER_NODE = 600 MiB", env={"SLURM_MEM_PER_NODE": "600"})

    def test_local_share_past_32_bit_scalapack(self):
        self.expect_error(74, ["--model", "builtin:convnet:18", "--eigen", "values", "--solver", "pdsyevr",
                               "--mem-per-rank", "400G"], "n = 52165", "2^31 - 1", "use at least 2 ranks", ranks=1)

    def test_problem_too_big_for_the_machine(self):
        # n = 6,400,325: a 328 TB float64 Hessian. Refused from the plan, before anything is allocated.
        line = self.expect_error(74, ["--model", "builtin:convnet:200"], "n = 6400325", "per rank", "ranks")
        self.assertIn("TB", line)

    # ---- the output directory --------------------------------------------------------------------

    def test_existing_result_is_refused_without_force(self):
        rc, stdout, stderr = dhess(RANKS, *self.linear(), "--out", self.out)
        self.assertEqual(rc, 0, stdout + stderr)
        before = {name: self.read(os.path.join(self.out, name)) for name in os.listdir(self.out)}
        rc, stdout, stderr = dhess(RANKS, *self.linear(), "--out", self.out)
        self.assertEqual(rc, 64, stderr)
        self.assertEqual(len(stderr_lines(stderr)), 1, stderr)
        line = stderr_lines(stderr)[0]
        self.assertTrue(line.startswith("dhess: error: "), stderr)
        for word in (self.out, "already holds a result", "--force"):
            self.assertIn(word, line)
        after = {name: self.read(os.path.join(self.out, name)) for name in os.listdir(self.out)}
        self.assertEqual(after, before, "the old result must be untouched")

    @staticmethod
    def read(path):
        with open(path, "rb") as f:
            return f.read()

    def test_out_is_an_existing_file(self):
        path = os.path.join(self.tmp.name, "a_file")
        with open(path, "w") as f:
            f.write("x")
        self.expect_error(64, self.linear(), path, "not a directory", out=path)

    def test_out_below_a_file(self):
        path = os.path.join(self.tmp.name, "a_file")
        with open(path, "w") as f:
            f.write("x")
        out = os.path.join(path, "sub")
        self.expect_error(74, self.linear(), out, out=out)

    def test_out_unwritable(self):
        # /proc refuses new directories even to root (chmod 555 would not stop root).
        self.expect_error(74, self.linear(), "/proc/dhess", out="/proc/dhess")

    # ---- a full disk: a 64 KB tmpfs mounted for the test ---------------------------------------

    @contextlib.contextmanager
    def small_disk(self, size="64k"):
        mnt = os.path.join(self.tmp.name, "disk")
        os.makedirs(mnt)
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mnt], capture_output=True,
                           text=True)
        if p.returncode != 0:
            self.skipTest("cannot mount a small tmpfs here (needs root): " + p.stderr.strip())
        try:
            yield mnt
        finally:
            subprocess.run(["umount", "-l", mnt], check=False)

    @staticmethod
    def fill(mnt, leave):
        """Fills the file system at mnt until `leave` bytes are free."""
        st = os.statvfs(mnt)
        with open(os.path.join(mnt, "filler"), "wb") as f:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))

    def wide(self, **kw):
        args = {"--model": self.f("wide.pt"), "--data": self.f("wide_data.pt"), "--loss": "mse"}
        args.update(kw)
        return [a for k, v in args.items() if v is not None for a in (k, v)]

    def test_disk_full_for_hessian_h5(self):
        # n = 630: hessian.h5 needs 3.2 MB, the disk has 64 KB. Refused before the file is created.
        with self.small_disk() as mnt:
            out = os.path.join(mnt, "r")
            self.expect_error(74, self.wide(**{"--eigen": "none"}) + ["--save-hessian"], "hessian.h5", "3.19 MB",
                              "free", out=out)

    def test_disk_full_for_eigenvectors_h5(self):
        with self.small_disk() as mnt:
            out = os.path.join(mnt, "r")
            self.expect_error(74, self.wide(**{"--eigen": "top:40"}), "eigenvectors.h5", "free", out=out)

    def test_disk_full_writing_eigenvalues_npy(self):
        # One free page: the write probe fits, eigenvalues.npy (630 x 8 bytes) does not.
        with self.small_disk() as mnt:
            self.fill(mnt, 4096)
            out = os.path.join(mnt, "r")
            self.expect_error(74, self.wide(), "eigenvalues.npy", "No space left on device", out=out)

    def test_disk_full_writing_json(self):
        # One free page: eigenvalues.npy (10 x 8 bytes) takes it, layout.json finds the disk full.
        with self.small_disk() as mnt:
            self.fill(mnt, 4096)
            out = os.path.join(mnt, "r")
            self.expect_error(74, self.linear(), ".json", out=out)

    def test_disk_full_before_the_run(self):
        with self.small_disk() as mnt:
            self.fill(mnt, 0)
            out = os.path.join(mnt, "r")
            self.expect_error(74, self.linear(), out, "No space left on device", out=out)

    def test_disk_full_for_the_checkpoint(self):
        with self.small_disk() as mnt:
            self.fill(mnt, 0)
            ck = os.path.join(mnt, "ck")
            self.expect_error(74, self.linear() + ["--checkpoint", ck], ck, "No space left on device")

    # ---- checkpoints -----------------------------------------------------------------------------

    def checkpointed(self):
        """A finished run's checkpoint directory, for the linear model."""
        ck = os.path.join(self.tmp.name, "ck")
        rc, stdout, stderr = dhess(RANKS, *self.linear(), "--eigen", "none", "--checkpoint", ck, "--out",
                                   os.path.join(self.tmp.name, "first"))
        self.assertEqual(rc, 0, stdout + stderr)
        return ck

    def test_checkpoint_of_another_model(self):
        ck = self.checkpointed()
        self.expect_error(65, self.linear(**{"--model": self.f("linear_other.pt")}) + ["--checkpoint", ck, "--resume"],
                          ck, "different problem", "model")

    def test_checkpoint_of_other_data(self):
        ck = self.checkpointed()
        self.expect_error(65, self.linear(**{"--data": self.f("other_data.pt")}) + ["--checkpoint", ck, "--resume"],
                          ck, "different problem", "data")

    def test_checkpoint_of_another_dtype(self):
        ck = self.checkpointed()
        self.expect_error(65, self.linear(**{"--dtype": "float32"}) + ["--checkpoint", ck, "--resume"], ck,
                          "different problem", "dtype", "float64", "float32")

    def test_checkpoint_of_another_parameter_selection(self):
        ck = self.checkpointed()
        self.expect_error(65, self.linear(**{"--params": "bias"}) + ["--checkpoint", ck, "--resume"], ck,
                          "different problem", "n is 10 there but 2 now")

    def test_checkpoint_exists_without_resume(self):
        ck = self.checkpointed()
        self.expect_error(64, self.linear() + ["--checkpoint", ck], ck, "--resume")

    def corrupt_last_byte(self, ck, suffix):
        names = sorted(f for f in os.listdir(ck) if f.endswith(suffix))
        self.assertTrue(names, os.listdir(ck))
        path = os.path.join(ck, names[0])
        data = bytearray(self.read(path))
        data[-1] ^= 0xFF
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_checkpoint_panel_corrupt(self):
        # Without the assembled H's record, --resume rebuilds H from the panels and reads them all.
        ck = self.checkpointed()
        os.remove(os.path.join(ck, "hessian.record"))
        path = self.corrupt_last_byte(ck, ".panel")
        self.expect_error(65, self.linear() + ["--checkpoint", ck, "--resume"], path, "corrupt")

    def test_checkpoint_hessian_share_corrupt(self):
        # With it, --resume reads each rank's share of H and no panel.
        ck = self.checkpointed()
        path = self.corrupt_last_byte(ck, ".share")
        self.expect_error(65, self.linear() + ["--checkpoint", ck, "--resume"], path, "corrupt")

    def test_checkpoint_metadata_not_json(self):
        ck = self.checkpointed()
        with open(os.path.join(ck, "checkpoint.json"), "w") as f:
            f.write("{not json")
        self.expect_error(65, self.linear() + ["--checkpoint", ck, "--resume"], "checkpoint.json", "JSON")

    # ---- one rank --------------------------------------------------------------------------------

    def test_one_rank_bad_model(self):
        self.expect_error(65, self.linear(**{"--model": self.f("tensor.pt")}), self.f("tensor.pt"), ranks=1)

    def test_one_rank_disk_full(self):
        with self.small_disk() as mnt:
            out = os.path.join(mnt, "r")
            self.expect_error(74, self.wide(**{"--eigen": "none"}) + ["--save-hessian"], "hessian.h5", out=out,
                              ranks=1)

    def test_first_pass_over_all_samples_past_memory(self):
        # One forward over 2,000 images keeps about 480 MB of graph; refused before it runs, with a
        # --batch-size that fits, instead of being killed by the kernel halfway through.
        args = ["--model", self.f("small_conv.pt"), "--data", self.f("many_images.pt"), "--loss", "cross_entropy"]
        self.expect_error(74, args + ["--mem-per-rank", "450M"], "one pass over 2000 samples", "450.00 MB",
                          "--batch-size")
        # dhess spectrum on 2 ranks: each rank's first pass covers its shard of 1,000 images.
        self.expect_error(74, ["spectrum"] + args + ["--mem-per-rank", "350M"],
                          "one pass over 1000 samples (this rank's data shard)", "more ranks")

    def test_one_rank_memory(self):
        self.expect_error(74, ["--model", "builtin:convnet:200"], "n = 6400325", ranks=1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write-fixtures":
        os.makedirs(sys.argv[2], exist_ok=True)
        write_fixtures(sys.argv[2])
        sys.exit(0)
    unittest.main(verbosity=2)
