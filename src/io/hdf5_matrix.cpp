#include "dhess/io/hdf5_matrix.hpp"

#include <hdf5.h>

#include <algorithm>
#include <vector>

#include "dhess/errors.hpp"

namespace dhess {
namespace {

// One owner per HDF5 handle.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t), const std::string& what) : id_(id), close_(close) {
    if (id < 0) throw ResourceError(what);
  }
  ~Handle() { close_(id_); }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  operator hid_t() const { return id_; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

}  // namespace

template <typename T>
void write_hdf5_matrix(const std::string& path, const std::string& name, const BlockCyclicMatrix<T>& matrix,
                       int64_t first, int64_t count, MPI_Comm comm) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors become exceptions below, not stack dumps
  const std::string where = "writing '" + path + "'";
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, where);
  H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
  Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), H5Fclose,
              "cannot create '" + path + "' (not writable or disk full?)");
  const hsize_t dims[2] = {static_cast<hsize_t>(matrix.rows()), static_cast<hsize_t>(count)};
  Handle file_space(H5Screate_simple(2, dims, nullptr), H5Sclose, where);
  const hid_t type = std::is_same_v<T, double> ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT;
  Handle dataset(H5Dcreate2(file, name.c_str(), type, file_space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                 H5Dclose, "cannot create dataset " + name + " in '" + path + "'");
  Handle xfer(H5Pcreate(H5P_DATASET_XFER), H5Pclose, where);
  H5Pset_dxpl_mpio(xfer, H5FD_MPIO_COLLECTIVE);

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

  const int64_t lr = matrix.local_rows();
  const int64_t full = lr / mb, rem = lr % mb;
  std::vector<T> strip(1);  // never empty: some MPI-IO layers reject a null buffer
  for (int64_t b = 0; b < max_runs; ++b) {
    Handle fspace(H5Dget_space(dataset), H5Sclose, where);
    const int64_t lj0 = b < my_runs ? runs[b].first : 0, width = b < my_runs ? runs[b].second : 0;
    hsize_t mdims[2] = {static_cast<hsize_t>(std::max<int64_t>(lr, 1)), static_cast<hsize_t>(std::max<int64_t>(width, 1))};
    Handle mspace(H5Screate_simple(2, mdims, nullptr), H5Sclose, where);
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
    if (H5Dwrite(dataset, type, mspace, fspace, xfer, strip.data()) < 0)
      throw ResourceError("writing dataset " + name + " of '" + path + "' failed (disk full?)");
  }
  if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) throw ResourceError("flushing '" + path + "' failed (disk full?)");
}

template void write_hdf5_matrix<double>(const std::string&, const std::string&, const BlockCyclicMatrix<double>&,
                                        int64_t, int64_t, MPI_Comm);
template void write_hdf5_matrix<float>(const std::string&, const std::string&, const BlockCyclicMatrix<float>&,
                                       int64_t, int64_t, MPI_Comm);

}  // namespace dhess
