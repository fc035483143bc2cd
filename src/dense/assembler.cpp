#include "dhess/dense/assembler.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "dhess/core/collective.hpp"
#include "dhess/core/errors.hpp"

namespace dhess {

template <typename T>
AssemblyStats assemble(HvpEngine& engine, const ProcessGrid& grid, BlockCyclicMatrix<T>& h, Progress& progress,
                       const AssemblyHooks<T>& hooks) {
  AssemblyStats stats;
  const int64_t n = h.rows();
  const int64_t k = engine.panel_width();
  const int64_t p = grid.size();
  stats.panel_width = k;
  // One panel for every round but a narrower last one: a fresh one each round was faulted in anew
  // (n x p k entries), as long as the products themselves where later layers' columns are cheap.
  std::optional<BlockCyclicMatrix<T>> round;
  for (int64_t c0 = 0; c0 < n; c0 += p * k) {
    const int64_t width = std::min(p * k, n - c0);
    if (!round || round->cols() != width)
      round.emplace(grid.row_context(), n, width, static_cast<int>(n), static_cast<int>(k), 0);
    BlockCyclicMatrix<T>& panel = *round;
    const int64_t j0 = std::min(n, c0 + grid.rank() * k), j1 = std::min(n, j0 + k);
    double t0 = MPI_Wtime();
    run_collectively(grid.comm(), [&] {
      if (j1 <= j0) return;
      if (hooks.lookup && hooks.lookup(j0, j1, panel.data())) {
        stats.columns_restored += j1 - j0;
        return;
      }
      engine.columns(j0, j1, panel.data());
      stats.columns_computed += j1 - j0;
      if (hooks.sink) hooks.sink(j0, j1, panel.data());
    });
    double t1 = MPI_Wtime();
    redistribute<T>(n, width, panel.data(), 0, 0, panel.desc(), h.data(), 0, c0, h.desc(), grid.context());
    stats.hvp_seconds += t1 - t0;
    stats.redistribute_seconds += MPI_Wtime() - t1;
    progress.update(c0 + width);
    if (hooks.after_round) hooks.after_round(c0 + width);
  }
  progress.finish();
  return stats;
}

namespace {

SymmetryStats symmetry_stats(double asym, double norm, MPI_Comm comm) {
  double local[2] = {asym, norm}, total[2] = {0, 0};
  MPI_Allreduce(local, total, 2, MPI_DOUBLE, MPI_SUM, comm);
  SymmetryStats stats;
  stats.frobenius = std::sqrt(total[1]);
  stats.asymmetry = total[1] > 0 ? std::sqrt(total[0] / total[1]) : 0.0;
  return stats;
}

// The first row column j holds: its parameter's (the largest offset <= j), or 0 for all.
std::vector<int64_t> first_rows(int64_t n, const std::vector<int64_t>& offsets) {
  std::vector<int64_t> first(static_cast<std::size_t>(n), 0);
  for (std::size_t p = 0; p < offsets.size(); ++p) {
    const int64_t end = p + 1 < offsets.size() ? offsets[p + 1] : n;
    for (int64_t j = std::max<int64_t>(offsets[p], 0); j < std::min(end, n); ++j) first[static_cast<std::size_t>(j)] = offsets[p];
  }
  return first;
}

// Whether the pair (i, j), (j, i) off the diagonal was computed on both sides.
bool twice(const std::vector<int64_t>& first, int64_t i, int64_t j) {
  return std::min(i, j) >= first[static_cast<std::size_t>(std::max(i, j))];
}

// One process holds all of H (leading dimension n): each pair (i, j), (j, i) averaged in place, by
// tiles that stay in cache. pdtran's strips took 1.4-2.0 s here at n = 10,565, this 0.5 s.
template <typename T>
SymmetryStats symmetrize_in_place(BlockCyclicMatrix<T>& h, const std::vector<int64_t>& first, MPI_Comm comm) {
  const int64_t n = h.rows(), lda = h.lld(), tile = 64;
  T* a = h.data();
  double asym = 0, norm = 0;
  for (int64_t j0 = 0; j0 < n; j0 += tile)
    for (int64_t i0 = j0; i0 < n; i0 += tile)
      for (int64_t j = j0; j < std::min(j0 + tile, n); ++j)
        for (int64_t i = std::max(i0, j); i < std::min(i0 + tile, n); ++i) {
          T& lower = a[i + j * lda];
          T& upper = a[j + i * lda];
          const double l = lower, u = upper, d = l - u;
          if (i == j) {
            norm += l * l;
            continue;
          }
          if (!twice(first, i, j)) {
            norm += 2 * l * l;
            upper = lower;
            continue;
          }
          norm += l * l + u * u;
          asym += 2 * d * d;
          lower = upper = static_cast<T>((l + u) / 2);
        }
  return symmetry_stats(asym, norm, comm);
}

}  // namespace

template <typename T>
SymmetryStats symmetrize(const ProcessGrid& grid, BlockCyclicMatrix<T>& h, const std::vector<int64_t>& offsets) {
  const int64_t n = h.rows();
  const std::vector<int64_t> first = first_rows(n, offsets);
  if (grid.size() == 1) return symmetrize_in_place(h, first, grid.comm());
  const int w = h.col_block();
  // Strips of 8 block columns: pdtran costs per call beyond its data (n = 10,565 on 2 ranks:
  // 1.29 s with strips of one block, 0.63 s with 8), and a strip's buffer (n x 8 blocks over the
  // process rows) stays a small part of H's share.
  const int64_t strip = 8 * static_cast<int64_t>(w);
  std::vector<int64_t> rows(static_cast<std::size_t>(h.local_rows()));  // global row of each local one
  for (int64_t li = 0; li < h.local_rows(); ++li) rows[static_cast<std::size_t>(li)] = h.global_row(li);
  double asym = 0, norm = 0;
  for (int64_t r0 = 0; r0 < n; r0 += strip) {
    const int64_t wr = std::min<int64_t>(strip, n - r0);
    const int csrc = h.col_axis().owner(r0);
    // temp (n×wr) = H[r0:r0+wr, :]ᵀ, aligned with H's block columns from r0/w on.
    BlockCyclicMatrix<T> temp(grid.context(), n, wr, h.row_block(), w, csrc);
    transpose<T>(n, wr, h.data(), r0, 0, h.desc(), temp.data(), temp.desc());
    for (int64_t lt = 0; lt < temp.local_cols(); ++lt) {
      const int64_t j = r0 + temp.global_col(lt);
      T* column = &h.at_local(0, h.col_axis().local(j));
      const T* mirror = &temp.at_local(0, lt);
      for (int64_t li = 0; li < h.local_rows(); ++li) {
        const int64_t i = rows[static_cast<std::size_t>(li)];
        const double t = mirror[li];
        T& value = column[li];
        const double v = value;
        if (i != j && !twice(first, i, j)) {  // only the lower entry was computed (as it stands in earlier strips)
          const double lower = i > j ? v : t;
          norm += lower * lower;
          value = static_cast<T>(lower);
          continue;
        }
        norm += v * v;
        if (i < r0) {
          value = static_cast<T>(t);  // (i, j) mirrors an entry already averaged in an earlier strip
          continue;
        }
        const double d = v - t;
        asym += (i >= r0 + wr ? 2 : 1) * d * d;
        value = static_cast<T>((v + t) / 2);
      }
    }
  }
  return symmetry_stats(asym, norm, grid.comm());
}

template <typename T>
double trace(const ProcessGrid& grid, const BlockCyclicMatrix<T>& h) {
  double local = 0, total = 0;
  for (int64_t lj = 0; lj < h.local_cols(); ++lj) {
    const int64_t j = h.global_col(lj);
    if (h.row_axis().owner(j) == h.my_row()) local += h.at_local(h.row_axis().local(j), lj);
  }
  MPI_Allreduce(&local, &total, 1, MPI_DOUBLE, MPI_SUM, grid.comm());
  return total;
}

template AssemblyStats assemble<double>(HvpEngine&, const ProcessGrid&, BlockCyclicMatrix<double>&, Progress&,
                                        const AssemblyHooks<double>&);
template AssemblyStats assemble<float>(HvpEngine&, const ProcessGrid&, BlockCyclicMatrix<float>&, Progress&,
                                       const AssemblyHooks<float>&);
template SymmetryStats symmetrize<double>(const ProcessGrid&, BlockCyclicMatrix<double>&, const std::vector<int64_t>&);
template SymmetryStats symmetrize<float>(const ProcessGrid&, BlockCyclicMatrix<float>&, const std::vector<int64_t>&);
template double trace<double>(const ProcessGrid&, const BlockCyclicMatrix<double>&);
template double trace<float>(const ProcessGrid&, const BlockCyclicMatrix<float>&);

}  // namespace dhess
