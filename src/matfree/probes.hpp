#pragma once
// Random probe entries keyed by (seed, stream, global row): the same vectors on any rank count,
// so results do not depend on how the rows are sharded. Private to src/matfree/.
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

}  // namespace dhess
