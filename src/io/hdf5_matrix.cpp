#include "dhess/io/hdf5_matrix.hpp"

#include <fcntl.h>
#include <hdf5.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "dhess/core/collective.hpp"
#include "dhess/core/errors.hpp"
#include "dhess/core/memory.hpp"
#include "hdf5_raw.hpp"

namespace dhess {
namespace hdf5_raw {
namespace {

// Room for HDF5's superblock, object headers and heaps: a few KB in practice.
constexpr double kHeaderBytes = 16384;

// One owner per HDF5 handle.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Handle() { close(); }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  operator hid_t() const { return id_; }
  bool valid() const { return id_ >= 0; }
  bool close() {  // false when the close failed (a flush of the file's header, say)
    if (id_ < 0) return true;
    herr_t rc = close_(id_);
    id_ = -1;
    return rc >= 0;
  }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// Bytes free to this process on the file system of `path`'s directory; -1 if unknown.
double free_bytes(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  struct statvfs st;
  if (statvfs(dir.empty() ? "." : dir.c_str(), &st) != 0) return -1;
  return static_cast<double>(st.f_bavail) * static_cast<double>(st.f_frsize);
}

std::string room(const std::string& path, double bytes) {
  double free = free_bytes(path);
  return human_bytes(bytes) + " to write, " + (free >= 0 ? human_bytes(free) : std::string("unknown")) +
         " free on its file system";
}

std::string system_error(int err, const char* fallback) { return err ? std::strerror(err) : fallback; }

}  // namespace

double DatasetSpec::bytes() const {
  double count = 1;
  for (auto d : shape) count *= static_cast<double>(d);
  return count * (float32 ? 4 : 8);
}

void require_space(const std::string& path, double bytes) {
  double free = free_bytes(path);
  if (free >= 0 && free < bytes + kHeaderBytes)
    throw ResourceError("cannot write '" + path + "': it needs " + human_bytes(bytes + kHeaderBytes) + " but only " +
                        human_bytes(free) + " is free on its file system");
}

std::vector<int64_t> create_layout(const std::string& path, const std::vector<DatasetSpec>& sets) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors become exceptions below, not stack dumps
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fapl.valid() || H5Pset_fapl_sec2(fapl) < 0) throw InternalError("HDF5 file access list for '" + path + "'");
  errno = 0;
  Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), H5Fclose);
  if (!file.valid()) throw ResourceError("cannot create '" + path + "': " + system_error(errno, "not writable?"));
  // Contiguous and allocated now, so that the data has a fixed offset; never
  // filled, so that the header is all HDF5 writes.
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (!dcpl.valid() || H5Pset_layout(dcpl, H5D_CONTIGUOUS) < 0 || H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY) < 0 ||
      H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0)
    throw InternalError("HDF5 dataset creation list for '" + path + "'");
  std::vector<int64_t> offsets;
  for (const auto& s : sets) {
    std::vector<hsize_t> dims(s.shape.begin(), s.shape.end());
    if (dims.empty()) dims.push_back(1);  // a scalar
    Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
    Handle set(H5Dcreate2(file, s.name.c_str(), s.float32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE, space, H5P_DEFAULT,
                          dcpl, H5P_DEFAULT),
               H5Dclose);
    if (!space.valid() || !set.valid()) throw ResourceError("cannot create dataset '" + s.name + "' in '" + path + "'");
    haddr_t offset = H5Dget_offset(set);
    if (offset == HADDR_UNDEF && s.bytes() > 0)
      throw InternalError("HDF5 gave dataset '" + s.name + "' of '" + path + "' no contiguous storage");
    offsets.push_back(offset == HADDR_UNDEF ? 0 : static_cast<int64_t>(offset));
  }
  errno = 0;
  if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0 || !file.close())
    throw ResourceError("cannot write the HDF5 header of '" + path + "': " + system_error(errno, "disk full?"));
  return offsets;
}

std::vector<int64_t> create_layout(const std::string& path, const std::vector<DatasetSpec>& sets, MPI_Comm comm) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  std::vector<int64_t> offsets(sets.size(), 0);
  run_collectively(comm, [&] {
    if (rank != 0) return;
    double bytes = 0;
    for (const auto& s : sets) bytes += s.bytes();
    require_space(path, bytes);
    offsets = create_layout(path, sets);
  });
  MPI_Bcast(offsets.data(), static_cast<int>(offsets.size()), MPI_INT64_T, 0, comm);
  return offsets;
}

RankWriter::RankWriter(const std::string& path, const std::string& what, double bytes, MPI_Comm comm)
    : path_(path), what_(what), bytes_(bytes), comm_(comm) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd_ < 0) note(errno, "open");
}

RankWriter::~RankWriter() {
  if (fd_ >= 0) ::close(fd_);  // only when unwinding: finish() closes otherwise
}

void RankWriter::note(int err, const char* call) {
  if (!failure_.empty()) return;
  std::string why = err == ENOENT ? std::string(call) + ": the file rank 0 created is not visible here (is '" + path_ +
                                        "' on a file system all nodes share?)"
                                  : std::string(std::strerror(err));
  failure_ = "writing " + what_ + " failed: " + why + " (" + room(path_, bytes_) + ")";
}

void RankWriter::write(int64_t offset, const void* data, std::size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (fd_ >= 0 && failure_.empty() && bytes > 0) {
    ssize_t w = ::pwrite(fd_, p, bytes, static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      note(w < 0 ? errno : EIO, "pwrite");
      return;
    }
    p += w;
    bytes -= static_cast<std::size_t>(w);
    offset += w;
  }
}

bool RankWriter::any_failed() {
  int failed = failure_.empty() ? 0 : 1, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, comm_);
  return any != 0;
}

void RankWriter::finish() {
  if (fd_ >= 0) {
    // Network and delayed-allocation file systems report a full disk here.
    if (failure_.empty() && ::fsync(fd_) != 0 && errno != EINVAL) note(errno, "fsync");
    if (::close(fd_) != 0 && failure_.empty()) note(errno, "close");
    fd_ = -1;
  }
  if (!any_failed()) return;
  int rank = 0;
  MPI_Comm_rank(comm_, &rank);
  if (rank == 0) std::remove(path_.c_str());  // give the space back: nothing in it is usable
  run_collectively(comm_, [&] {
    if (!failure_.empty()) throw ResourceError(failure_);
  });
}

}  // namespace hdf5_raw

// Two-phase output done by hand: in each round, rank k gathers a band of q
// whole rows from the ranks that hold pieces of them (one MPI_Alltoallv) and
// writes it as one contiguous region, so no two ranks write the same bytes and
// the writes are large. Memory: about three bands, a few MB.
template <typename T>
void write_hdf5_matrix(const std::string& path, const std::string& name, const BlockCyclicMatrix<T>& matrix,
                       int64_t first, int64_t count, MPI_Comm comm) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const int64_t m = matrix.rows();
  hdf5_raw::DatasetSpec spec{name, {m, count}, std::is_same_v<T, float>};
  const int64_t base = hdf5_raw::create_layout(path, {spec}, comm)[0];
  hdf5_raw::RankWriter file(
      path, "dataset '" + name + "' (" + std::to_string(m) + " x " + std::to_string(count) + ") of '" + path + "'",
      spec.bytes(), comm);
  const MPI_Datatype type = std::is_same_v<T, double> ? MPI_DOUBLE : MPI_FLOAT;

  int mine[2] = {matrix.my_row(), matrix.my_col()};
  std::vector<int> coords(2 * static_cast<std::size_t>(size));
  MPI_Allgather(mine, 2, MPI_INT, coords.data(), 2, MPI_INT, comm);
  const CyclicAxis& rows = matrix.row_axis();
  const CyclicAxis& cols = matrix.col_axis();
  std::vector<std::vector<int64_t>> cols_of(static_cast<std::size_t>(cols.procs));  // ascending
  for (int64_t j = first; j < first + count; ++j) cols_of[cols.owner(j)].push_back(j);
  std::vector<int64_t> my_local_cols;
  for (int64_t j : cols_of[matrix.my_col()]) my_local_cols.push_back(cols.local(j));

  const int64_t row_bytes = std::max<int64_t>(count, 1) * static_cast<int64_t>(sizeof(T));
  const int64_t q = std::clamp<int64_t>((int64_t(8) << 20) / row_bytes, 1, std::max<int64_t>(1, (m + size - 1) / size));
  std::vector<T> send, recv, band;
  std::vector<int> send_count(size), send_at(size), recv_count(size), recv_at(size);
  for (int64_t r0 = 0; r0 < m; r0 += q * size) {
    auto band_of = [&](int k) {
      int64_t b = std::min(m, r0 + k * q);
      return std::make_pair(b, std::min(m, b + q));
    };
    send.clear();
    for (int k = 0; k < size; ++k) {
      send_at[k] = static_cast<int>(send.size());
      auto [b, e] = band_of(k);
      for (int64_t i = b; i < e; ++i) {
        if (rows.owner(i) != matrix.my_row()) continue;
        const int64_t li = rows.local(i);
        for (int64_t lj : my_local_cols) send.push_back(matrix.at_local(li, lj));
      }
      send_count[k] = static_cast<int>(send.size()) - send_at[k];
    }
    auto [b, e] = band_of(rank);
    int total = 0;
    for (int s = 0; s < size; ++s) {
      int64_t held = 0;
      for (int64_t i = b; i < e; ++i) held += rows.owner(i) == coords[2 * s] ? 1 : 0;
      recv_at[s] = total;
      recv_count[s] = static_cast<int>(held * static_cast<int64_t>(cols_of[coords[2 * s + 1]].size()));
      total += recv_count[s];
    }
    recv.resize(static_cast<std::size_t>(std::max(total, 1)));
    if (send.empty()) send.resize(1);  // never a null buffer
    MPI_Alltoallv(send.data(), send_count.data(), send_at.data(), type, recv.data(), recv_count.data(), recv_at.data(),
                  type, comm);
    band.assign(static_cast<std::size_t>((e - b) * count), T(0));
    for (int s = 0; s < size; ++s) {
      std::size_t at = static_cast<std::size_t>(recv_at[s]);
      for (int64_t i = b; i < e; ++i) {
        if (rows.owner(i) != coords[2 * s]) continue;
        for (int64_t j : cols_of[coords[2 * s + 1]]) band[(i - b) * count + (j - first)] = recv[at++];
      }
    }
    file.write(base + b * count * static_cast<int64_t>(sizeof(T)), band.data(), band.size() * sizeof(T));
    if (file.any_failed()) break;  // every rank leaves the loop in the same round
  }
  file.finish();
}

template void write_hdf5_matrix<double>(const std::string&, const std::string&, const BlockCyclicMatrix<double>&,
                                        int64_t, int64_t, MPI_Comm);
template void write_hdf5_matrix<float>(const std::string&, const std::string&, const BlockCyclicMatrix<float>&, int64_t,
                                       int64_t, MPI_Comm);

}  // namespace dhess
