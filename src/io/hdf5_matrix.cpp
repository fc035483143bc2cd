#include "dhess/io/hdf5_matrix.hpp"

#include <hdf5.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "dhess/collective.hpp"
#include "dhess/errors.hpp"
#include "dhess/memory.hpp"

namespace dhess {
namespace {

// One owner per HDF5 handle. A handle whose collective close could not be
// matched on every rank is released instead (leaked), since closing it would hang.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Handle() { close(); }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  operator hid_t() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now; false when the close failed (a collective flush of a file, say).
  bool close() {
    if (id_ < 0) return true;
    herr_t rc = close_(id_);
    id_ = -1;
    return rc >= 0;
  }
  void release() { id_ = -1; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// Bytes free for this process on the file system that holds `path`'s directory; -1 if unknown.
double free_bytes(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  struct statvfs st;
  if (statvfs(dir.empty() ? "." : dir.c_str(), &st) != 0) return -1;
  return static_cast<double>(st.f_bavail) * static_cast<double>(st.f_frsize);
}

// What went wrong in a failed write, as far as errno and the file system tell.
std::string write_failure(const std::string& path, double bytes, int err) {
  double free = free_bytes(path);
  std::string why = err == ENOSPC || err == EDQUOT || err == EFBIG || err == EIO ? std::strerror(err)
                    : free >= 0 && free < bytes                                  ? "disk full?"
                                                                                 : "I/O error";
  return why + "; " + human_bytes(bytes) + " to write, " + (free >= 0 ? human_bytes(free) : "unknown") +
         " free on its file system";
}

// Rank-local failure of a step that every rank must go through anyway.
struct Failure {
  std::string what;
  void note(bool ok, const std::string& message) {
    if (!ok && what.empty()) what = message;
  }
};

}  // namespace

template <typename T>
void write_hdf5_matrix(const std::string& path, const std::string& name, const BlockCyclicMatrix<T>& matrix,
                       int64_t first, int64_t count, MPI_Comm comm) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors become exceptions below, not stack dumps
  const double bytes = static_cast<double>(matrix.rows()) * static_cast<double>(count) * sizeof(T);
  const std::string dataset_text = "dataset '" + name + "' (" + std::to_string(matrix.rows()) + " x " +
                                   std::to_string(count) + ") of '" + path + "'";

  // A file that cannot fit is refused before it is created; 16 KiB covers HDF5's own metadata.
  run_collectively(comm, [&] {
    if (rank != 0) return;
    double free = free_bytes(path);
    if (free >= 0 && free < bytes + 16384)
      throw ResourceError("cannot write '" + path + "': it needs " + human_bytes(bytes + 16384) + " but only " +
                          human_bytes(free) + " is free on its file system");
  });

  // Every HDF5 call below that is collective (create, write, close) is made by
  // every rank whatever happened before on this rank; failures are only noted,
  // and the ranks agree on them at the end. Throwing in between would let this
  // rank's destructors close the file while the others still write: a hang.
  Failure failed;
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fapl.valid() || H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) < 0)
    throw InternalError("HDF5 has no MPI-IO driver (H5Pset_fapl_mpio failed) for '" + path + "'");
  errno = 0;
  Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), H5Fclose);
  const int create_errno = errno;
  int created = file.valid() ? 1 : 0, all_created = 0;
  check_mpi(MPI_Allreduce(&created, &all_created, 1, MPI_INT, MPI_MIN, comm), "MPI_Allreduce");
  if (!all_created) {
    file.release();  // open on some ranks only: its collective close cannot be matched
    run_collectively(comm, [&] {
      if (!created)
        throw ResourceError("cannot create '" + path + "': " +
                            (create_errno ? std::strerror(create_errno) : "not writable or disk full?"));
    });
    throw ResourceError("cannot create '" + path + "' on every rank (is the directory shared by all nodes?)");
  }

  const hsize_t dims[2] = {static_cast<hsize_t>(matrix.rows()), static_cast<hsize_t>(count)};
  Handle file_space(H5Screate_simple(2, dims, nullptr), H5Sclose);
  const hid_t type = std::is_same_v<T, double> ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT;
  Handle dataset(H5Dcreate2(file, name.c_str(), type, file_space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  Handle xfer(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
  failed.note(dataset.valid(), "cannot create " + dataset_text);
  failed.note(xfer.valid() && H5Pset_dxpl_mpio(xfer, H5FD_MPIO_COLLECTIVE) >= 0,
              "cannot set up a collective write of " + dataset_text);
  int usable = failed.what.empty() ? 1 : 0, all_usable = 0;
  check_mpi(MPI_Allreduce(&usable, &all_usable, 1, MPI_INT, MPI_MIN, comm), "MPI_Allreduce");

  // Local runs of consecutive columns (at most one block wide) are written one
  // at a time, transposed to row-major: the extra memory is one block column.
  const int mb = matrix.row_block();
  const auto& rows = matrix.row_axis();
  std::vector<std::pair<int64_t, int64_t>> runs;  // (first local column, width)
  for (int64_t lj = 0; lj < matrix.local_cols(); ++lj) {
    const int64_t j = matrix.global_col(lj);
    if (j < first || j >= first + count) continue;
    if (!runs.empty() && matrix.global_col(runs.back().first + runs.back().second - 1) == j - 1 &&
        runs.back().second < matrix.col_block())
      ++runs.back().second;
    else
      runs.emplace_back(lj, 1);
  }
  int64_t my_runs = static_cast<int64_t>(runs.size()), max_runs = 0;
  check_mpi(MPI_Allreduce(&my_runs, &max_runs, 1, MPI_INT64_T, MPI_MAX, comm), "MPI_Allreduce");
  if (!all_usable) max_runs = 0;

  const int64_t lr = matrix.local_rows();
  const int64_t full = lr / mb, rem = lr % mb;
  std::vector<T> strip(1);  // never empty: some MPI-IO layers reject a null buffer
  for (int64_t b = 0; b < max_runs; ++b) {
    Handle fspace(H5Dget_space(dataset), H5Sclose);
    const int64_t lj0 = b < my_runs ? runs[b].first : 0, width = b < my_runs ? runs[b].second : 0;
    hsize_t mdims[2] = {static_cast<hsize_t>(std::max<int64_t>(lr, 1)), static_cast<hsize_t>(std::max<int64_t>(width, 1))};
    Handle mspace(H5Screate_simple(2, mdims, nullptr), H5Sclose);
    if (b >= my_runs || lr == 0) {
      H5Sselect_none(fspace);
      H5Sselect_none(mspace);
    } else {
      const hsize_t c0 = static_cast<hsize_t>(matrix.global_col(lj0) - first);
      H5S_seloper_t op = H5S_SELECT_SET;
      if (full > 0) {
        hsize_t start[2] = {static_cast<hsize_t>(matrix.global_row(0)), c0};
        hsize_t stride[2] = {static_cast<hsize_t>(mb) * rows.procs, 1};
        hsize_t count[2] = {static_cast<hsize_t>(full), 1};
        hsize_t block[2] = {static_cast<hsize_t>(mb), static_cast<hsize_t>(width)};
        H5Sselect_hyperslab(fspace, op, start, stride, count, block);
        op = H5S_SELECT_OR;
      }
      if (rem > 0) {
        hsize_t start[2] = {static_cast<hsize_t>(matrix.global_row(full * mb)), c0};
        hsize_t count[2] = {1, 1};
        hsize_t block[2] = {static_cast<hsize_t>(rem), static_cast<hsize_t>(width)};
        H5Sselect_hyperslab(fspace, op, start, nullptr, count, block);
      }
      strip.resize(static_cast<std::size_t>(lr * width));
      for (int64_t c = 0; c < width; ++c)
        for (int64_t r = 0; r < lr; ++r) strip[r * width + c] = matrix.at_local(r, lj0 + c);
    }
    errno = 0;
    if (H5Dwrite(dataset, type, mspace, fspace, xfer, strip.data()) < 0)
      failed.note(false, "writing " + dataset_text + " failed (" + write_failure(path, bytes, errno) + ")");
  }
  errno = 0;
  failed.note(dataset.close(), "closing " + dataset_text + " failed (" + write_failure(path, bytes, errno) + ")");
  errno = 0;
  failed.note(file.close(), "closing '" + path + "' failed (" + write_failure(path, bytes, errno) + ")");
  run_collectively(comm, [&] {
    if (!failed.what.empty()) throw ResourceError(failed.what);
  });
}

template void write_hdf5_matrix<double>(const std::string&, const std::string&, const BlockCyclicMatrix<double>&,
                                        int64_t, int64_t, MPI_Comm);
template void write_hdf5_matrix<float>(const std::string&, const std::string&, const BlockCyclicMatrix<float>&,
                                       int64_t, int64_t, MPI_Comm);

}  // namespace dhess
