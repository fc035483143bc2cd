#pragma once
// The floating-point type of a run: torch's products, the Hessian and the solver all use it.
#include <cstddef>

namespace dhess {

enum class Dtype { float64, float32 };

inline const char* dtype_name(Dtype dtype) { return dtype == Dtype::float64 ? "float64" : "float32"; }
inline std::size_t dtype_bytes(Dtype dtype) { return dtype == Dtype::float64 ? 8 : 4; }

}  // namespace dhess
