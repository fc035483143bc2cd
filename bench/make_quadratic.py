"""A TorchScript model whose Hessian is a given symmetric matrix A (n x n).

forward() returns 0.5 * x @ A @ x for one parameter vector x, so with `--loss none`
dhess's Hessian is exactly A. A is a seeded random symmetric (GOE) matrix, written
also as A.npy for the numpy peers.
usage: make_quadratic.py N SEED model.pt A.npy
"""
import sys

import numpy as np
import torch


class Quadratic(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.x = torch.nn.Parameter(torch.linspace(-1, 1, a.shape[0], dtype=torch.float64))
        self.register_buffer("a", a)

    def forward(self):
        return 0.5 * torch.dot(self.x, torch.mv(self.a, self.x))


def main():
    n, seed, model_path, matrix_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    rng = np.random.default_rng(seed)
    a = np.empty((n, n))
    for i in range(0, n, 1024):  # row strips keep the temporary small
        a[i:i + 1024] = rng.standard_normal((min(1024, n - i), n))
    a += a.T
    a /= np.sqrt(8.0 * n)  # semicircle on [-1, 1]
    np.save(matrix_path, a)
    torch.jit.script(Quadratic(torch.from_numpy(a))).save(model_path)


if __name__ == "__main__":
    main()
