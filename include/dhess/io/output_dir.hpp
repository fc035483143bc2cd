#pragma once
// The --out directory: refuses to replace an existing result without --force,
// stages every file under a temporary name and renames them into place only
// when the run has finished, summary.json last.
#include <mpi.h>

#include <string>
#include <vector>

namespace dhess {

class OutputDir {
 public:
  // Collective over `comm`; rank 0 touches the file system, all ranks agree on errors.
  OutputDir(const std::string& path, bool force, MPI_Comm comm);

  const std::string& path() const { return path_; }
  // Where `name` is written while the run is in progress.
  std::string staged(const std::string& name) const;
  std::string final_path(const std::string& name) const;
  // Renames the staged files into place (summary.json last); collective.
  void commit(const std::vector<std::string>& names);

  // Every file name a dhess run may write: what counts as an existing result.
  static const std::vector<std::string>& result_names();

 private:
  std::string path_;
  bool force_;
  MPI_Comm comm_;
};

}  // namespace dhess
