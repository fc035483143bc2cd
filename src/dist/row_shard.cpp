#include "dhess/dist/row_shard.hpp"

#include <algorithm>

namespace dhess {

RowShard RowShard::of(int64_t n, int rank, int size) {
  RowShard s;
  s.n = n;
  s.begin = n * rank / size;
  s.end = n * (rank + 1) / size;
  return s;
}

RowShard RowShard::blocks(int64_t n, int rank, int size) {
  const int64_t block = (n + size - 1) / size;
  RowShard s;
  s.n = n;
  s.begin = std::min(n, block * rank);
  s.end = std::min(n, s.begin + block);
  return s;
}

ShardCounts::ShardCounts(int64_t n, MPI_Comm comm, RowShard (*shard_of)(int64_t, int, int)) {
  int size = 1;
  MPI_Comm_size(comm, &size);
  for (int p = 0; p < size; ++p) {
    const RowShard s = shard_of(n, p, size);
    counts.push_back(static_cast<int>(s.rows()));
    displs.push_back(static_cast<int>(s.begin));
  }
}

void gather_column(const double* local, const RowShard& shard, const ShardCounts& counts, double* whole, int root,
                   MPI_Comm comm) {
  MPI_Gatherv(local, static_cast<int>(shard.rows()), MPI_DOUBLE, whole, counts.counts.data(), counts.displs.data(),
              MPI_DOUBLE, root, comm);
}

void scatter_column(const double* whole, const RowShard& shard, const ShardCounts& counts, double* local, int root,
                    MPI_Comm comm) {
  MPI_Scatterv(whole, counts.counts.data(), counts.displs.data(), MPI_DOUBLE, local, static_cast<int>(shard.rows()),
               MPI_DOUBLE, root, comm);
}

std::vector<double> gather_columns_to_root(const std::vector<double>& local, const RowShard& shard, int64_t k,
                                           MPI_Comm comm) {
  const ShardCounts l(shard.n, comm);
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  std::vector<double> all(rank == 0 ? static_cast<std::size_t>(shard.n * k) : 0);
  for (int64_t c = 0; c < k; ++c)
    MPI_Gatherv(local.data() + c * shard.rows(), static_cast<int>(shard.rows()), MPI_DOUBLE,
                rank == 0 ? all.data() + c * shard.n : nullptr, l.counts.data(), l.displs.data(), MPI_DOUBLE, 0, comm);
  return all;
}

std::vector<double> scatter_columns_from_root(const std::vector<double>& all, const RowShard& shard, int64_t k,
                                              MPI_Comm comm) {
  const ShardCounts l(shard.n, comm);
  std::vector<double> local(static_cast<std::size_t>(shard.rows() * k));
  for (int64_t c = 0; c < k; ++c)
    MPI_Scatterv(all.empty() ? nullptr : all.data() + c * shard.n, l.counts.data(), l.displs.data(), MPI_DOUBLE,
                 local.data() + c * shard.rows(), static_cast<int>(shard.rows()), MPI_DOUBLE, 0, comm);
  return local;
}

void allgather_columns(const double* local, const RowShard& shard, int64_t k, double* all, MPI_Comm comm) {
  const ShardCounts l(shard.n, comm);
  for (int64_t c = 0; c < k; ++c)
    MPI_Allgatherv(local + c * shard.rows(), static_cast<int>(shard.rows()), MPI_DOUBLE, all + c * shard.n,
                   l.counts.data(), l.displs.data(), MPI_DOUBLE, comm);
}

void reduce_scatter_columns(const double* full, const RowShard& shard, int64_t k, double* local, MPI_Comm comm) {
  const ShardCounts l(shard.n, comm);
  for (int64_t c = 0; c < k; ++c)
    MPI_Reduce_scatter(full + c * shard.n, local + c * shard.rows(), l.counts.data(), MPI_DOUBLE, MPI_SUM, comm);
}

}  // namespace dhess
