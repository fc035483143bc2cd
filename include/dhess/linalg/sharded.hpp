#pragma once
// Small dense linear algebra on row-sharded vectors (dist/row_shard.hpp): each rank holds its rows
// of a block of columns, column-major; inner products are summed over the ranks. What the
// matrix-free estimators are built from.
#include <mpi.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace dhess {

// y_shard = H · x for k vectors given and returned as this rank's rows (column-major rows × k);
// collective. What the matrix-free estimators and the range finder apply.
using ShardedOperator = std::function<void(const double* x_shard, int64_t k, double* y_shard)>;

double allsum(double v, MPI_Comm comm);
void allsum(std::vector<double>& v, MPI_Comm comm);

// c = Vᵀ w over the first `cols` columns of V (rows × cols, column-major), summed over ranks.
std::vector<double> project(const std::vector<double>& v, int64_t rows, int64_t cols, const double* w, MPI_Comm comm);
// w -= V c over the first `cols` columns of V.
void subtract(const std::vector<double>& v, int64_t rows, int64_t cols, const std::vector<double>& c, double* w);
// ‖w‖₂ of a sharded vector.
double norm(const double* w, int64_t rows, MPI_Comm comm);
// ‖w_c‖₂ of each of k sharded columns (rows × k, column-major), in one reduction.
std::vector<double> column_norms(const double* w, int64_t rows, int64_t k, MPI_Comm comm);
// V·Y for this rank's rows: V rows × m, Y m × k (the same on every rank); rows × k.
std::vector<double> combine(const std::vector<double>& v, int64_t rows, int64_t m, const std::vector<double>& y,
                            int64_t k);
// The first k columns of V become V·Y (k ≤ m), in place, a block of rows at a time: a restarted
// Lanczos basis rotates without a second copy of itself.
void combine_in_place(std::vector<double>& v, int64_t rows, int64_t m, const std::vector<double>& y, int64_t k);

// Appends to the orthonormal basis `q` (rows × rank, rank grown in place) the directions of the k
// columns of `block` (destroyed) that are new: the basis projected out of the block and the block
// orthonormalized (SVQB), twice; a direction joins unless what remains of it is at most `drop`
// times the block's longest column. Returns the number of columns added. Collective.
int64_t extend_orthonormal_basis(std::vector<double>& q, int64_t rows, int64_t& rank, std::vector<double>& block,
                                 int64_t k, double drop, MPI_Comm comm);
// Qᵀ·W (rank × k, the same on every rank) for row-sharded Q (rows × rank) and W (rows × k). Collective.
std::vector<double> inner_products(const std::vector<double>& q, int64_t rows, int64_t rank, const double* w, int64_t k,
                                   MPI_Comm comm);

// The lower triangle of Qᵀ·W (rank × rank, column-major, the same on every rank; above it only
// the diagonal blocks of its panels are set) where it is known to be symmetric (W = H·Q for a
// symmetric H): half the flops of inner_products. Collective.
std::vector<double> symmetric_inner_products(const std::vector<double>& q, int64_t rows, int64_t rank,
                                             const std::vector<double>& w, MPI_Comm comm);
// The eigenvalues (ascending) of a small symmetric matrix given by its lower triangle (LAPACK
// dsyevd without vectors).
std::vector<double> symmetric_eigenvalues(std::vector<double> a, int64_t m);

// Eigenvalues (ascending) and eigenvectors (column-major m × m) of a small symmetric matrix held
// whole by every rank (LAPACK dsyevd): the same answer on every rank.
void symmetric_eigen(std::vector<double> a, int64_t m, std::vector<double>& values, std::vector<double>& vectors);

// Eigenvalues (ascending) and eigenvectors (column-major m × m) of the symmetric tridiagonal matrix
// with diagonal alpha[0:m] and off-diagonal beta[0:m-1] (LAPACK dstev).
void tridiagonal_eigen(const std::vector<double>& alpha, const std::vector<double>& beta, int64_t m,
                       std::vector<double>& values, std::vector<double>& vectors);

}  // namespace dhess
