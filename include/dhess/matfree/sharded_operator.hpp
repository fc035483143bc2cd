#pragma once
// What the matrix-free estimators apply: H to k row-sharded vectors.
#include <cstdint>
#include <functional>

namespace dhess {

// y_shard = H · x for k vectors given and returned as this rank's rows (column-major rows × k);
// collective.
using ShardedOperator = std::function<void(const double* x_shard, int64_t k, double* y_shard)>;

}  // namespace dhess
