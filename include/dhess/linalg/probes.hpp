#pragma once
// Random probe entries keyed by (seed, stream, global row): the same vectors on any rank count,
// so results do not depend on how the rows are sharded.
#include <cmath>
#include <cstdint>

namespace dhess {

inline uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
inline double rademacher(uint64_t seed, uint64_t stream, uint64_t row) {
  return (mix(seed ^ mix(stream * 0x100000001b3ull + row)) & 1) ? 1.0 : -1.0;
}
inline double uniform(uint64_t seed, uint64_t stream, uint64_t row) {
  return static_cast<double>(mix(seed ^ mix(stream * 0x100000001b3ull + row)) >> 11) * 0x1.0p-53 - 0.5;
}

// The streams of the matrix-free phases' probes: SLQ's starting vectors, Hutchinson's trace probes,
// Hutch++'s sketch and its remainder's probes, the diagonal's probes. Probe c is stream + c.
constexpr uint64_t kSlqStream = 1000, kHutchinsonStream = 2000, kHutchppSketchStream = 3000, kHutchppStream = 4000,
                   kDiagonalStream = 5000;

// Entry `row` of SLQ's starting vector p: a Rademacher vector of unit norm in n dimensions.
inline double slq_start(uint64_t seed, uint64_t p, uint64_t row, int64_t n) {
  return rademacher(seed, kSlqStream + p, row) / std::sqrt(double(n));
}

// Standard normal entries `first` .. `first + count - 1` of one stream, for Gaussian sketches: Box-Muller
// over two uniforms in (0, 1) keyed by the pair of rows (2i, 2i + 1), its cosine for the even row and
// its sine for the odd one (one logarithm per two entries).
inline void gaussians(uint64_t seed, uint64_t stream, uint64_t first, int64_t count, double* out) {
  const uint64_t end = first + static_cast<uint64_t>(count);
  for (uint64_t pair = first / 2; 2 * pair < end; ++pair) {
    const uint64_t key = mix(stream * 0x100000001b3ull + pair);
    const double u1 = (static_cast<double>(mix(seed ^ key) >> 11) + 0.5) * 0x1.0p-53;
    const double u2 = (static_cast<double>(mix(seed ^ key ^ 0x5bd1e995ull) >> 11) + 0.5) * 0x1.0p-53;
    const double radius = std::sqrt(-2 * std::log(u1)), angle = 6.283185307179586 * u2;
    if (2 * pair >= first) out[2 * pair - first] = radius * std::cos(angle);
    if (2 * pair + 1 < end) out[2 * pair + 1 - first] = radius * std::sin(angle);
  }
}

}  // namespace dhess
