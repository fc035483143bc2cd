#pragma once
// Checkpoint: finished Hessian column panels on disk, so a run stopped by a
// time limit or a signal resumes without recomputing them, also on another
// rank count. Panels are keyed by their column range, which depends only on
// the panel width k (recorded in the metadata), never on the grid.
#include <mpi.h>

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace dhess {

// 64-bit FNV-1a of a file's bytes: tells one model or data file from another
// (not a cryptographic hash).
std::string file_hash(const std::string& path);

// Reads a panel file written by Checkpoint::save into `panel` (n × (j1 − j0));
// false when the file does not exist, InputError when it is not that panel.
template <typename T>
bool read_panel(const std::string& path, int64_t j0, int64_t j1, int64_t n, T* panel);

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

  const std::string& dir() const { return dir_; }

 private:
  std::string panel_path(int64_t j0, int64_t j1) const;
  std::string dir_;
  int64_t panel_width_ = 0;
  int64_t panels_found_ = 0;
};

}  // namespace dhess
