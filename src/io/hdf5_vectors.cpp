// HDF5 output of row-sharded vectors (matrix-free path) and of small named
// arrays written by one process.
#include <hdf5.h>

#include <algorithm>

#include "dhess/errors.hpp"
#include "dhess/io/hdf5_matrix.hpp"

namespace dhess {
namespace {

// One owner per HDF5 handle; a failed open becomes a ResourceError naming `what`.
class Owned {
 public:
  Owned(hid_t id, herr_t (*close)(hid_t), const std::string& what) : id_(id), close_(close) {
    if (id < 0) throw ResourceError(what);
  }
  ~Owned() { close_(id_); }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  operator hid_t() const { return id_; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

}  // namespace

void write_hdf5_row_shards(const std::string& path, const std::string& name, const double* local, int64_t row0,
                           int64_t rows, int64_t n, int64_t cols, MPI_Comm comm) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const std::string where = "writing '" + path + "'";
  Owned fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, where);
  H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
  Owned file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), H5Fclose,
             "cannot create '" + path + "' (not writable or disk full?)");
  const hsize_t dims[2] = {static_cast<hsize_t>(n), static_cast<hsize_t>(cols)};
  Owned file_space(H5Screate_simple(2, dims, nullptr), H5Sclose, where);
  Owned dataset(H5Dcreate2(file, name.c_str(), H5T_NATIVE_DOUBLE, file_space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                H5Dclose, "cannot create dataset " + name + " in '" + path + "'");
  Owned xfer(H5Pcreate(H5P_DATASET_XFER), H5Pclose, where);
  H5Pset_dxpl_mpio(xfer, H5FD_MPIO_COLLECTIVE);
  const double dummy = 0;
  // One collective write per column: each column of the local array is contiguous.
  int failed = 0;
  for (int64_t c = 0; c < cols; ++c) {
    Owned fspace(H5Dget_space(dataset), H5Sclose, where);
    hsize_t mdim = static_cast<hsize_t>(std::max<int64_t>(rows, 1));
    Owned mspace(H5Screate_simple(1, &mdim, nullptr), H5Sclose, where);
    if (rows == 0) {
      H5Sselect_none(fspace);
      H5Sselect_none(mspace);
    } else {
      hsize_t start[2] = {static_cast<hsize_t>(row0), static_cast<hsize_t>(c)};
      hsize_t count[2] = {static_cast<hsize_t>(rows), 1};
      H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, nullptr, count, nullptr);
    }
    if (H5Dwrite(dataset, H5T_NATIVE_DOUBLE, mspace, fspace, xfer, rows == 0 ? &dummy : local + c * rows) < 0)
      failed = 1;
  }
  if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) failed = 1;
  int any = 0;
  check_mpi(MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, comm), "MPI_Allreduce");
  if (any) {
    ResourceError e("writing dataset " + name + " of '" + path + "' failed (disk full?)");
    e.mark_agreed();
    throw e;
  }
}

void write_hdf5_arrays(const std::string& path, const std::vector<NamedArray>& arrays) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  Owned file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose,
             "cannot create '" + path + "' (not writable or disk full?)");
  for (const auto& a : arrays) {
    std::vector<hsize_t> dims(a.shape.begin(), a.shape.end());
    if (dims.empty()) dims.push_back(1);  // a scalar parameter
    Owned space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose, path);
    Owned set(H5Dcreate2(file, a.name.c_str(), H5T_NATIVE_DOUBLE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
              H5Dclose, "cannot create dataset '" + a.name + "' in '" + path + "'");
    if (H5Dwrite(set, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.data) < 0)
      throw ResourceError("writing '" + path + "' failed (disk full?)");
  }
  if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) throw ResourceError("flushing '" + path + "' failed (disk full?)");
}

}  // namespace dhess
