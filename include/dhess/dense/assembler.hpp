#pragma once
// Assembler: streams Hessian columns from the HvpEngine into the 2D
// block-cyclic matrix one panel round at a time. In each round every rank
// computes k columns into an n×k panel (a 1×P block-cyclic layout) and one
// pdgemr2d moves the round into place; no rank ever holds more than one panel.
#include <cstdint>
#include <functional>

#include "dhess/dist/block_cyclic.hpp"
#include "dhess/report/progress.hpp"
#include "dhess/torch/hvp.hpp"

namespace dhess {

// Optional source of finished panels (a checkpoint): returns true and fills
// `panel` when columns [j0, j1) are already known.
template <typename T>
using PanelLookup = std::function<bool(int64_t j0, int64_t j1, T* panel)>;
// Called after a panel was computed (to checkpoint it).
template <typename T>
using PanelSink = std::function<void(int64_t j0, int64_t j1, const T* panel)>;
// Called at the end of every round, collectively; may throw to stop (signals).
using RoundHook = std::function<void(int64_t columns_done)>;

struct AssemblyStats {
  double hvp_seconds = 0;           // this rank
  double redistribute_seconds = 0;  // this rank
  int64_t panel_width = 0;
  int64_t columns_computed = 0;  // by this rank, not counting checkpointed ones
  int64_t columns_restored = 0;
};

template <typename T>
struct AssemblyHooks {
  PanelLookup<T> lookup;
  PanelSink<T> sink;
  RoundHook after_round;
};

template <typename T>
AssemblyStats assemble(HvpEngine& engine, const ProcessGrid& grid, BlockCyclicMatrix<T>& h, Progress& progress,
                       const AssemblyHooks<T>& hooks = {});

struct SymmetryStats {
  double asymmetry = 0;  // ‖H−Hᵀ‖_F / ‖H‖_F before symmetrizing, over the pairs computed twice (0 when H = 0)
  double frobenius = 0;  // ‖H‖_F before symmetrizing (a pair computed once: its lower entry twice)
};
// H ← (H+Hᵀ)/2 in strips of block columns, where both triangles were computed. `offsets`: the
// first row of each parameter, ascending (Layout's offsets): column j then holds rows from its
// parameter's first on (HvpEngine::columns), and above those the lower triangle's entry is taken.
// Empty: every entry was computed. The asymmetry is over the pairs computed twice.
template <typename T>
SymmetryStats symmetrize(const ProcessGrid& grid, BlockCyclicMatrix<T>& h, const std::vector<int64_t>& offsets = {});

template <typename T>
double trace(const ProcessGrid& grid, const BlockCyclicMatrix<T>& h);

}  // namespace dhess
