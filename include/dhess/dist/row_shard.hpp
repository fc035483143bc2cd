#pragma once
// Vectors sharded by rows: each rank holds the contiguous rows [begin, end) of every n-vector,
// column-major for blocks of k vectors. The matrix-free path keeps all its vectors this way, so
// neither n² nor n·steps lives on one rank.
#include <mpi.h>

#include <cstdint>
#include <vector>

namespace dhess {

// This rank's contiguous rows [begin, end) of an n-vector.
struct RowShard {
  int64_t n = 0, begin = 0, end = 0;
  int64_t rows() const { return end - begin; }
  static RowShard of(int64_t n, int rank, int size);
  // Blocks of ceil(n / size) rows, the last one short: a P×1 block-cyclic layout's rows.
  static RowShard blocks(int64_t n, int rank, int size);
};

// Every rank's row count and first row, as MPI's v-collectives take them, in the layout
// `shard_of` gives (RowShard::of or RowShard::blocks).
struct ShardCounts {
  std::vector<int> counts, displs;
  ShardCounts(int64_t n, MPI_Comm comm, RowShard (*shard_of)(int64_t, int, int) = RowShard::of);
};

// k row-sharded columns (rows × k) gathered whole: n × k on rank 0 (empty elsewhere), or on
// every rank into `all`; and back. Collective.
std::vector<double> gather_columns_to_root(const std::vector<double>& local, const RowShard& shard, int64_t k,
                                           MPI_Comm comm);
std::vector<double> scatter_columns_from_root(const std::vector<double>& all, const RowShard& shard, int64_t k,
                                              MPI_Comm comm);
void allgather_columns(const double* local, const RowShard& shard, int64_t k, double* all, MPI_Comm comm);
// Row-sharded column ↔ that column whole on rank `root` (`whole` is read or written there only),
// in the layout `counts` describes. Collective.
void gather_column(const double* local, const RowShard& shard, const ShardCounts& counts, double* whole, int root,
                   MPI_Comm comm);
void scatter_column(const double* whole, const RowShard& shard, const ShardCounts& counts, double* local, int root,
                    MPI_Comm comm);
// local (rows × k) = this rank's rows of the sum over ranks of full (n × k). Collective.
void reduce_scatter_columns(const double* full, const RowShard& shard, int64_t k, double* local, MPI_Comm comm);

}  // namespace dhess
