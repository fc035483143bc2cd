#pragma once
// Checkpoint: finished work on disk, so a run stopped by a time limit or a
// signal resumes without recomputing it, also on another rank count. The dense
// path saves Hessian column panels, keyed by their column range (which depends
// only on the panel width k recorded in the metadata, never on the grid); the
// matrix-free path saves each finished phase as a record plus named arrays.
#include <mpi.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "dhess/dist/block_cyclic.hpp"

namespace dhess {

// 64-bit FNV-1a of a file's bytes: tells one model or data file from another
// (not a cryptographic hash).
std::string file_hash(const std::string& path);

// Reads a panel file written by Checkpoint::save into `panel` (n × (j1 − j0));
// false when the file does not exist, InputError when it is not that panel or is damaged (with
// `remedy`, what the user can do about it).
template <typename T>
bool read_panel(const std::string& path, int64_t j0, int64_t j1, int64_t n, T* panel,
                const std::string& remedy = "remove it to recompute it");

class Checkpoint {
 public:
  // `identity`: everything that makes two runs compute the same columns (model
  // and data hashes, loss, dtype, n, parameter selection, panel width).
  // Collective. Without `resume`, refuses a directory that already holds panels;
  // with `resume`, refuses one written for a different problem.
  Checkpoint(const std::string& dir, const nlohmann::json& identity, bool resume, MPI_Comm comm);

  // Panel width the checkpoint was written with (may differ from the one asked for).
  int64_t panel_width() const { return panel_width_; }
  int64_t panels_found() const { return panels_found_; }

  // Reads columns [j0, j1) of an n-row panel if saved; false when absent.
  template <typename T>
  bool load(int64_t j0, int64_t j1, int64_t n, T* panel) const;
  // Saves columns [j0, j1): write to a temporary name, fsync, rename.
  template <typename T>
  void save(int64_t j0, int64_t j1, int64_t n, const T* panel) const;

  // A finished phase of the matrix-free path: a JSON record (rank 0 writes; every
  // rank gets it back) and named n×k arrays written by rank 0. Collective.
  void save_record(const std::string& name, const nlohmann::json& record) const;
  bool load_record(const std::string& name, nlohmann::json& record) const;
  void save_array(const std::string& name, int64_t n, int64_t k, const double* data) const;
  bool load_array(const std::string& name, int64_t n, int64_t k, double* data) const;

  // The assembled, symmetrized H kept before the eigensolver, so that --resume goes straight to the
  // solve: every rank its block-cyclic share (atomic, checksummed), then `record` on rank 0, which
  // marks the set complete. `record` holds "distribution" (what the shares are valid for: ranks,
  // grid, block, n, dtype) and whatever the run needs back. Collective.
  template <typename T>
  void save_hessian(const BlockCyclicMatrix<T>& h, const nlohmann::json& record) const;
  // Fills `h` and `record` when a complete saved H has this `distribution`; false otherwise (none
  // saved, or saved on another grid: the caller reassembles H from the column panels). Collective.
  template <typename T>
  bool load_hessian(BlockCyclicMatrix<T>& h, const nlohmann::json& distribution, nlohmann::json& record) const;

  const std::string& dir() const { return dir_; }

 private:
  std::string panel_path(int64_t j0, int64_t j1) const;
  std::string share_path() const;
  std::string dir_;
  MPI_Comm comm_;
  int64_t panel_width_ = 0;
  int64_t panels_found_ = 0;
};

}  // namespace dhess
