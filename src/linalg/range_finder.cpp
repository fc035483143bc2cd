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
// Certificates repeated after one whose probes held the rest of the range.
constexpr int kRecertify = 2;

class RangeFinder {
 public:
  RangeFinder(const ShardedOperator& op, const RowShard& shard, const RangeFinderOptions& o, MPI_Comm comm)
      : op_(op), shard_(shard), o_(o), comm_(comm), rows_(shard.rows()) {
    max_columns_ = o.max_columns > 0 ? std::min(o.max_columns, shard.n) : shard.n;
    seconds_ = o.seconds;
    refine_ = o.refine;
    q_.reserve(static_cast<std::size_t>(rows_ * std::min<int64_t>(max_columns_, 2 * o.first_block)));
  }

  NonzeroSpectrum run() {
    int64_t next = std::min(o_.first_block, shard_.n);
    while (true) {
      const int64_t before = rank_;
      if (!room_for(next)) return incomplete(false);
      next = width_in_time(next);
      if (next == 0) return incomplete(true);
      const double round_start = MPI_Wtime(), products_before = product_seconds_;
      std::vector<double> y = sketch(next);
      extend(y, next);
      const bool certified = certify_captured();
      measure_orthonormalization(MPI_Wtime() - round_start - (product_seconds_ - products_before), before);
      if (certified || rank_ == shard_.n) break;
      if (full_) return incomplete(false);
      if (rank_ == before) stalled();
      next = std::min(sketched_, shard_.n);  // the total doubles
    }
    return project();
  }

 private:
  NonzeroSpectrum incomplete(bool out_of_time) const {
    NonzeroSpectrum s;
    s.complete = false;
    s.out_of_time = out_of_time;
    s.rank = rank_;
    s.sketch_columns = sketched_;
    return s;
  }

  // The seconds of orthonormalizing per (new column x basis column), from the last round: its time
  // but for its products, over the columns it added times the basis they were orthonormalized against.
  void measure_orthonormalization(double seconds, int64_t basis_before) {
    const double added = static_cast<double>(std::max<int64_t>(rank_ - basis_before, 1));
    orth_per_pair_ = std::max(0.0, seconds) / (added * static_cast<double>(std::max<int64_t>(rank_, 1)));
  }

  // The widest round of up to k vectors -- k, k/2, k/4, ... down to the first block -- whose time
  // and the projection's after it (a product per basis vector whose product the sketch has not
  // made) stay within what the sketch may take; 0 where none does. A round of k costs its products
  // (the mean time of one so far), up to 1 + kRecertify certificates' probes, and the
  // orthonormalization of k columns against a basis of rank + k (twice, with the probes: counted in
  // the measured time per pair). Every rank decides on the slowest rank's clock.
  int64_t width_in_time(int64_t k) {
    if (seconds_ <= 0 || sketched_ == 0) return k;
    double clock[3] = {MPI_Wtime() - start_, product_seconds_, orth_per_pair_};
    MPI_Allreduce(MPI_IN_PLACE, clock, 3, MPI_DOUBLE, MPI_MAX, comm_);
    const double per_product = clock[1] / static_cast<double>(sketched_);
    auto projected = [&](int64_t w) {
      const double width = static_cast<double>(w), basis = static_cast<double>(rank_ + w);
      const double unmultiplied = static_cast<double>(rank_ - known_ - reused(w) + w);
      return clock[0] + per_product * (width + (1 + kRecertify) * o_.probes + unmultiplied) + clock[2] * width * basis;
    };
    for (int64_t w = k; w >= std::min(o_.first_block, k); w /= 2)
      if (projected(w) <= seconds_) return w;
    if (!refine_) return 0;
    seconds_ = std::max(seconds_, refine_());
    refine_ = nullptr;
    return width_in_time(k);  // the estimate took time too
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

  // The basis vectors a round of k multiplies: those whose products are not yet known, up to half
  // the round (the other half fresh Gaussian vectors, whatever H's eigenvalues' multiplicities).
  int64_t reused(int64_t k) const { return std::min(rank_ - known_, k / 2); }

  // H·X for a round of k sketch vectors X: the basis vectors whose products are not yet known (their
  // products are Krylov directions for the sketch and columns of HQ for the projection, which then
  // need not multiply them again), then fresh Gaussian vectors.
  std::vector<double> sketch(int64_t k) {
    const int64_t basis = reused(k);
    std::vector<double> x(static_cast<std::size_t>(rows_ * k));
    std::copy(q_.begin() + known_ * rows_, q_.begin() + (known_ + basis) * rows_, x.begin());
    fill_gaussian(x, basis, k);
    std::vector<double> y = products(x, k);
    hq_.insert(hq_.end(), y.begin(), y.begin() + basis * rows_);
    known_ += basis;
    return y;
  }

  // Columns first .. k - 1 of x (rows × k): fresh Gaussian vectors, one stream per product made.
  void fill_gaussian(std::vector<double>& x, int64_t first, int64_t k) const {
    for (int64_t c = first; c < k; ++c)
      gaussians(o_.seed, 9000000 + sketched_ + c, static_cast<uint64_t>(shard_.begin), rows_, x.data() + c * rows_);
  }

  // H·X for k vectors X (rows × k).
  std::vector<double> products(const std::vector<double>& x, int64_t k) {
    std::vector<double> y(x.size());
    const double t = MPI_Wtime();
    op_(x.data(), k, y.data());
    product_seconds_ += MPI_Wtime() - t;
    const std::vector<double> in = column_norms(x.data(), rows_, k, comm_),
                              out = column_norms(y.data(), rows_, k, comm_);
    for (int64_t c = 0; c < k; ++c) norm_ = std::max(norm_, out[c] / in[c]);
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

  // The basis grows by the block's new directions; HQ's columns get room for as many (reserved,
  // not touched: the projection's products fill it without a second copy of what is there).
  void extend(std::vector<double>& block, int64_t k) {
    extend_orthonormal_basis(q_, rows_, rank_, block, k, kDrop, comm_);
    hq_.reserve(q_.capacity());
  }

  // Fresh probes, again while the last ones added fewer directions than they were: the part of H's
  // range outside the basis was then within their span (Gaussian probes of a rank-d remainder span
  // it whenever d is below their count), so it is in the basis now and the next probes certify it
  // at the price of the probes alone, where a new round would multiply as many vectors as the basis
  // holds.
  // At most kRecertify times: past that a round, which the time budget weighs, takes over.
  bool certify_captured() {
    const int64_t p = std::min(o_.probes, shard_.n);
    for (int again = 0; again <= kRecertify; ++again) {
      const int64_t before = rank_;
      if (certify()) return true;
      const int64_t added = rank_ - before;
      if (full_ || added == 0 || added == p) return false;
    }
    return false;
  }

  // Fresh probes: certified when what Q misses of their products is within tolerance / 10 of ‖H‖
  // (estimated from below by the largest ‖Hω‖/‖ω‖ seen, so the test errs on the strict side).
  // Probes that fail add their new directions to the basis.
  bool certify() {
    const int64_t p = std::min(o_.probes, shard_.n);
    std::vector<double> w(static_cast<std::size_t>(rows_ * p));
    fill_gaussian(w, 0, p);
    w = products(w, p);
    for (int pass = 0; pass < 2; ++pass) {
      const std::vector<double> c = inner_products(q_, rows_, rank_, w.data(), p, comm_);
      const std::vector<double> qc = combine(q_, rows_, rank_, c, p);
      for (std::size_t i = 0; i < w.size(); ++i) w[i] -= qc[i];
    }
    const std::vector<double> missed = column_norms(w.data(), rows_, p, comm_);
    const double largest = *std::max_element(missed.begin(), missed.end());
    bound_ = kBoundFactor * largest;
    if (bound_ <= o_.tolerance / 10 * norm_) return true;
    full_ = !room_for(p);
    if (!full_) extend(w, p);
    return false;
  }

  // The eigenpairs of B = QᵀHQ, and Q·V for those that are nonzero.
  NonzeroSpectrum project() {
    hq_.resize(q_.size());
    if (rank_ > known_) op_(q_.data() + known_ * rows_, rank_ - known_, hq_.data() + known_ * rows_);
    std::vector<double> b = symmetric_inner_products(q_, rows_, rank_, hq_, comm_);
    hq_ = std::vector<double>();
    std::vector<double> theta, v;
    if (o_.vectors)
      symmetric_eigen(std::move(b), rank_, theta, v);
    else
      theta = symmetric_eigenvalues(std::move(b), rank_);
    NonzeroSpectrum s;
    s.rank = rank_;
    s.sketch_columns = sketched_;
    s.bound = bound_;
    for (double t : theta) s.norm = std::max(s.norm, std::abs(t));
    std::vector<double> kept;
    for (int64_t i = 0; i < rank_; ++i) {
      if (std::abs(theta[i]) <= o_.tolerance * s.norm) continue;
      s.values.push_back(theta[i]);
      if (o_.vectors) kept.insert(kept.end(), v.begin() + i * rank_, v.begin() + (i + 1) * rank_);
    }
    if (o_.vectors) s.vectors = combine(q_, rows_, rank_, kept, static_cast<int64_t>(s.values.size()));
    return s;
  }

  const ShardedOperator& op_;
  const RowShard shard_;
  const RangeFinderOptions o_;
  MPI_Comm comm_;
  const int64_t rows_;
  int64_t max_columns_ = 0;
  std::vector<double> q_;   // the orthonormal basis, rows × rank_
  std::vector<double> hq_;  // H times its first known_ columns
  int64_t rank_ = 0, known_ = 0, sketched_ = 0;
  double norm_ = 0, bound_ = 0;
  bool full_ = false;
  const double start_ = MPI_Wtime();
  double product_seconds_ = 0;  // spent in products
  double orth_per_pair_ = 0;    // seconds per (new column x basis column) of the last orthonormalization
  double seconds_ = 0;          // the time allowed, refined at most once
  std::function<double()> refine_;
};

}  // namespace

NonzeroSpectrum nonzero_spectrum(const ShardedOperator& op, const RowShard& shard, const RangeFinderOptions& options,
                                 MPI_Comm comm) {
  return RangeFinder(op, shard, options, comm).run();
}

}  // namespace dhess
