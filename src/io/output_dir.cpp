#include "dhess/io/output_dir.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "dhess/core/collective.hpp"
#include "dhess/core/errors.hpp"

namespace dhess {
namespace fs = std::filesystem;

const std::vector<std::string>& OutputDir::result_names() {
  static const std::vector<std::string> names = {
      "summary.json", "eigenvalues.npy", "eigenvectors.h5", "hessian.h5",   "layout.json", "eigenvector_shares.npy",
      "spectrum.png", "density.csv",     "slq_nodes.csv",   "diagonal.npy", "diagonal.h5"};
  return names;
}

OutputDir::OutputDir(const std::string& path, bool force, MPI_Comm comm) : path_(path), force_(force), comm_(comm) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  run_collectively(comm, [&] {
    if (rank != 0) return;
    if (path.empty()) throw UsageError("--out must name a directory");
    std::error_code ec;
    if (fs::exists(path, ec) && !fs::is_directory(path, ec))
      throw UsageError("--out '" + path + "' exists and is not a directory");
    if (!force) {
      for (const auto& name : result_names())
        if (fs::exists(fs::path(path) / name, ec))
          throw UsageError("--out '" + path + "' already holds a result (" + name +
                           "); pass --force to replace it or choose another directory");
    }
    fs::create_directories(path, ec);
    if (ec) throw ResourceError("cannot create output directory '" + path + "': " + ec.message());
    // A directory can be creatable and still take no data (read-only bind, full disk).
    const std::string probe = (fs::path(path) / ".dhess-write-test").string();
    int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int err = fd < 0 ? errno : 0;
    if (fd >= 0) {
      if (::write(fd, "probe", 5) != 5) err = errno ? errno : EIO;
      if (::close(fd) != 0 && err == 0) err = errno;
      ::unlink(probe.c_str());
    }
    if (err) throw ResourceError("cannot write in output directory '" + path + "': " + std::strerror(err));
  });
}

std::string OutputDir::staged(const std::string& name) const {
  return (fs::path(path_) / (name + ".partial")).string();
}

std::string OutputDir::final_path(const std::string& name) const { return (fs::path(path_) / name).string(); }

void OutputDir::commit(const std::vector<std::string>& names) {
  int rank = 0;
  MPI_Comm_rank(comm_, &rank);
  run_collectively(comm_, [&] {
    if (rank != 0) return;
    std::error_code ec;
    if (force_)  // files of an earlier result that this run does not replace must not look like part of it
      for (const auto& name : result_names()) fs::remove(final_path(name), ec);
    std::vector<std::string> ordered;
    for (const auto& n : names)
      if (n != "summary.json") ordered.push_back(n);
    for (const auto& n : names)
      if (n == "summary.json") ordered.push_back(n);
    for (const auto& n : ordered) {
      fs::rename(staged(n), final_path(n), ec);
      if (ec) throw ResourceError("cannot move '" + staged(n) + "' into place: " + ec.message());
    }
  });
}

}  // namespace dhess
