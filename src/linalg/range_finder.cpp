#include "dhess/linalg/range_finder.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "dhess/core/errors.hpp"
#include "dhess/core/memory.hpp"
#include "dhess/linalg/probes.hpp"
#include "dhess/linalg/sharded.hpp"

namespace dhess {
namespace {

// The HMT a-posteriori factor: ‖(I − QQᵀ)H‖ ≤ 10 √(2/π) max_i ‖(I − QQᵀ)Hω_i‖.
constexpr double kBoundFactor = 7.978845608028654;
// What is left of a sketch column after projection, relative to its norm, below which it is rounding.
constexpr double kDrop = 1e-13;

class RangeFinder {
 public:
  RangeFinder(const ShardedOperator& op, const RowShard& shard, const RangeFinderOptions& o, MPI_Comm comm)
      : op_(op), shard_(shard), o_(o), comm_(comm), rows_(shard.rows()) {
    max_columns_ = o.max_columns > 0 ? std::min(o.max_columns, shard.n) : shard.n;
    q_.reserve(static_cast<std::size_t>(rows_ * std::min<int64_t>(max_columns_, 2 * o.first_block)));
  }

  NonzeroSpectrum run() {
    int64_t next = std::min(o_.first_block, shard_.n);
    while (true) {
      const int64_t before = rank_;
      if (!room_for(next)) return incomplete();
      std::vector<double> y = products(next);
      extend(y, next);
      if (certify() || rank_ == shard_.n) break;
      if (full_) return incomplete();
      if (rank_ == before) stalled();
      next = std::min(sketched_, shard_.n);  // the total doubles
    }
    return project();
  }

 private:
  NonzeroSpectrum incomplete() const {
    NonzeroSpectrum s;
    s.complete = false;
    s.rank = rank_;
    s.sketch_columns = sketched_;
    return s;
  }

  // A round that adds no direction yet leaves the probes uncertified: what they miss is the products'
  // own error, not range. Every rank sees the same sums.
  [[noreturn]] void stalled() const {
    UsageError error("the sketch of H stopped growing at dimension " + std::to_string(rank_) +
                     " while fresh probes still leave " + std::to_string(bound_ / norm_) +
                     " x ||H|| outside it: the products are not accurate enough for --tol " +
                     std::to_string(o_.tolerance) + " (float32 products?); raise --tol or use --dtype float64");
    error.mark_agreed();
    throw error;
  }

  // H·Ω for k fresh Gaussian vectors.
  std::vector<double> products(int64_t k) {
    std::vector<double> omega(static_cast<std::size_t>(rows_ * k)), y(omega.size());
    for (int64_t c = 0; c < k; ++c)
      for (int64_t i = 0; i < rows_; ++i)
        omega[c * rows_ + i] = gaussian(o_.seed, 9000000 + sketched_ + c, static_cast<uint64_t>(shard_.begin + i));
    op_(omega.data(), k, y.data());
    for (int64_t c = 0; c < k; ++c)
      norm_ = std::max(norm_, norm(y.data() + c * rows_, rows_, comm_) / norm(omega.data() + c * rows_, rows_, comm_));
    sketched_ += k;
    return y;
  }

  // Whether k more sketch vectors fit; when they do not, refuses or (give_up) says false.
  bool room_for(int64_t k) const {
    if (rank_ + std::min(k, shard_.n - rank_) <= max_columns_) return true;
    if (o_.when_full == RangeFinderOptions::WhenFull::give_up) return false;
    const std::string seen = rank_ == 0 ? "n = " + std::to_string(shard_.n) + ": the first "
                                        : "H has at least " + std::to_string(rank_) +
                                              " nonzero eigenvalues of n = " + std::to_string(shard_.n) +
                                              " and its range is not yet certified: the next ";
    ResourceError full(seen + std::to_string(k) + " sketch vectors would take the basis past the " +
                       std::to_string(max_columns_) + " vectors memory holds (" +
                       human_bytes(32.0 * static_cast<double>(rows_) * static_cast<double>(rank_ + k)) +
                       " per rank for the basis, its products and the sketch); use more ranks, or the Lanczos "
                       "extremes (--top/--bottom)");
    full.mark_agreed();  // every rank holds the same basis size (its norms are sums over ranks)
    throw full;
  }

  void extend(std::vector<double>& block, int64_t k) {
    extend_orthonormal_basis(q_, rows_, rank_, block, k, kDrop, comm_);
  }

  // Fresh probes: certified when what Q misses of their products is within tolerance / 10 of ‖H‖
  // (estimated from below by the largest ‖Hω‖/‖ω‖ seen, so the test errs on the strict side).
  // Probes that fail add their new directions to the basis.
  bool certify() {
    const int64_t p = std::min(o_.probes, shard_.n);
    std::vector<double> w = products(p);
    for (int pass = 0; pass < 2; ++pass) {
      const std::vector<double> c = inner_products(q_, rows_, rank_, w.data(), p, comm_);
      const std::vector<double> qc = combine(q_, rows_, rank_, c, p);
      for (std::size_t i = 0; i < w.size(); ++i) w[i] -= qc[i];
    }
    double largest = 0;
    for (int64_t c = 0; c < p; ++c) largest = std::max(largest, norm(w.data() + c * rows_, rows_, comm_));
    bound_ = kBoundFactor * largest;
    if (bound_ <= o_.tolerance / 10 * norm_) return true;
    full_ = !room_for(p);
    if (!full_) extend(w, p);
    return false;
  }

  // The eigenpairs of B = QᵀHQ, and Q·V for those that are nonzero.
  NonzeroSpectrum project() {
    std::vector<double> hq(q_.size());
    if (rank_ > 0) op_(q_.data(), rank_, hq.data());
    std::vector<double> b = inner_products(q_, rows_, rank_, hq.data(), rank_, comm_);
    hq = std::vector<double>();
    for (int64_t i = 0; i < rank_; ++i)
      for (int64_t j = 0; j < i; ++j) b[i * rank_ + j] = b[j * rank_ + i] = (b[i * rank_ + j] + b[j * rank_ + i]) / 2;
    std::vector<double> theta, v;
    symmetric_eigen(std::move(b), rank_, theta, v);
    NonzeroSpectrum s;
    s.rank = rank_;
    s.sketch_columns = sketched_;
    s.bound = bound_;
    for (double t : theta) s.norm = std::max(s.norm, std::abs(t));
    std::vector<double> kept;
    for (int64_t i = 0; i < rank_; ++i) {
      if (std::abs(theta[i]) <= o_.tolerance * s.norm) continue;
      s.values.push_back(theta[i]);
      kept.insert(kept.end(), v.begin() + i * rank_, v.begin() + (i + 1) * rank_);
    }
    s.vectors = combine(q_, rows_, rank_, kept, static_cast<int64_t>(s.values.size()));
    return s;
  }

  const ShardedOperator& op_;
  const RowShard shard_;
  const RangeFinderOptions o_;
  MPI_Comm comm_;
  const int64_t rows_;
  int64_t max_columns_ = 0;
  std::vector<double> q_;  // the orthonormal basis, rows × rank_
  int64_t rank_ = 0, sketched_ = 0;
  double norm_ = 0, bound_ = 0;
  bool full_ = false;
};

}  // namespace

NonzeroSpectrum nonzero_spectrum(const ShardedOperator& op, const RowShard& shard, const RangeFinderOptions& options,
                                 MPI_Comm comm) {
  return RangeFinder(op, shard, options, comm).run();
}

}  // namespace dhess
