#pragma once
// Every nonzero eigenpair of H without forming it, when H's rank is far below n (network Hessians:
// bounded by samples, classes and widths): a randomized range finder (Halko, Martinsson, Tropp
// 2011) over batched Hessian-vector products, certified with fresh probes before it answers.
#include <mpi.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "dhess/dist/row_shard.hpp"
#include "dhess/linalg/sharded.hpp"

namespace dhess {

struct RangeFinderOptions {
  double tolerance = 1e-8;   // |λ| ≤ tolerance · max|λ| counts as zero; the range is certified at a tenth
  int64_t max_columns = 0;   // the most basis vectors memory holds (0: n)
  int64_t first_block = 64;  // sketch vectors of the first round; each round doubles the total
  int64_t probes = 16;       // fresh Gaussian probes of each certificate
  uint64_t seed = 0;
  // Past max_columns: refuse (ResourceError, the matrix-free path), or give up and say so
  // (NonzeroSpectrum::complete false: a caller with another solver at hand).
  enum class WhenFull { refuse, give_up } when_full = WhenFull::refuse;
  // Seconds the sketch may take (0: no limit): a round that would take it past them, with the
  // projection after it, is not begun (NonzeroSpectrum::complete false, out_of_time) -- unless
  // `refine`, asked once (collectively) at that point, gives a larger limit: a cheap bound first,
  // a costly estimate only where the sketch runs long enough to need it.
  double seconds = 0;
  std::function<double()> refine;
  bool vectors = true;  // false: the eigenvalues alone (no Q·V, an n × rank² product)
};

struct NonzeroSpectrum {
  std::vector<double> values;   // the nonzero eigenvalues, ascending
  std::vector<double> vectors;  // this rank's rows of their eigenvectors (rows × values.size()); empty
                                // where RangeFinderOptions::vectors is false
  int64_t rank = 0;             // the dimension of the certified range (nonzero eigenvalues among it)
  int64_t sketch_columns = 0;   // products spent on the sketch and the certificates
  double bound = 0;          // ‖(I − QQᵀ)H‖₂ ≤ bound, with probability ≥ 1 − 10^-probes (HMT Lemma 4.1)
  double norm = 0;           // max|λ|
  bool complete = true;      // false: gave up past max_columns or `seconds`; only rank and sketch_columns are set
  bool out_of_time = false;  // gave up because the next round would pass `seconds`
};

// Doubles a sketch H·Ω (Ω: fresh Gaussian vectors and, up to half of each round, the basis vectors
// whose products it lacks) until fresh probes certify that Q (its orthonormal range) holds H's
// range to tolerance / 10 · ‖H‖, then takes the eigenpairs of QᵀHQ. Every eigenvalue of H outside
// `values` is zero within `bound`, and those in it are within `bound` of H's. Throws ResourceError,
// with the rank seen so far, when the basis outgrows `max_columns`. Collective.
NonzeroSpectrum nonzero_spectrum(const ShardedOperator& op, const RowShard& shard, const RangeFinderOptions& options,
                                 MPI_Comm comm);

}  // namespace dhess
