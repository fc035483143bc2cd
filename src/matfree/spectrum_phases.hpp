#pragma once
// Internal to src/matfree: the results of the phases of dhess spectrum, and the files they become.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dhess/core/blocks.hpp"
#include "dhess/core/dtype.hpp"
#include "dhess/core/layout.hpp"
#include "dhess/dist/row_shard.hpp"
#include "dhess/io/output_dir.hpp"
#include "dhess/matfree/density.hpp"
#include "dhess/matfree/lanczos.hpp"
#include "dhess/matfree/trace.hpp"
#include "dhess/run/setup.hpp"

namespace dhess {

struct DiagonalResult {
  std::vector<double> values, stderr_values;  // this rank's rows; stderr empty when exact
};

// --blocks in dhess spectrum (spectrum_blocks.cpp). This rank's rows by block, for the Hutchinson
// diagonal's per-block traces.
RowGroups row_groups(const std::vector<ParameterBlock>& blocks, const RowShard& shard);
// Each block's trace -- the sum of its exact diagonal, or its Hutchinson trace from the diagonal's
// probes (`traces`) -- and its largest eigenvalues by Lanczos on the restriction P C P of `op` to
// its rows, started inside them. Collective.
std::vector<BlockCurvature> spectrum_block_curvature(const ShardedOperator& op, const RowShard& shard,
                                                     const std::vector<ParameterBlock>& blocks,
                                                     const DiagonalResult& diagonal,
                                                     const std::vector<TraceEstimate>& traces,
                                                     const LanczosOptions& lanczos, MPI_Comm comm);

// What the phases found, to be written.
struct SpectrumResults {
  std::vector<double> values;   // eigenvalues found (Lanczos extremes or every nonzero one), ascending
  std::vector<double> vectors;  // this rank's rows of their eigenvectors (rows × values.size())
  std::vector<QuadratureNode> nodes;
  Density density;
  DiagonalResult diagonal;
};

// Writes eigenvectors.h5, eigenvalues.npy, density.csv, slq_nodes.csv, diagonal.npy/h5,
// layout.json and spectrum.png (titled by `matrix`: "Hessian", "Gauss-Newton matrix") as staged
// files; returns their names. Collective.
std::vector<std::string> write_spectrum_files(const Rank& r, const SpectrumResults& results, const RowShard& shard,
                                              const ParameterLayout& layout, const std::string& matrix, OutputDir& out);

// The diagonal's sum and largest |entry| per parameter tensor, for summary.json. Collective.
nlohmann::json diagonal_per_parameter(const Rank& r, const DiagonalResult& diagonal, const RowShard& shard,
                                      const ParameterLayout& layout);

// "  trace: about 335.8 +- 24.8 (Hutchinson estimate from 52 products)\n", or the exact trace
// with the estimates beside it, from summary.json's "trace".
std::string trace_line(const nlohmann::json& trace);
// summary.json's "precision": which parts run in which dtype, and the accuracy measured.
nlohmann::json precision_of(Dtype dtype);

}  // namespace dhess
