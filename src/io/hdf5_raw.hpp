#pragma once
// Internal to src/io: HDF5 files whose header is written by one process with
// serial HDF5 and whose data every rank writes with plain pwrite().
//
// Why not parallel HDF5 over MPI-IO (checked with a disk that fills up on one
// rank, Debian 12: HDF5 1.10.8, Open MPI 4.1.4): OMPIO's collective writes
// return MPI_SUCCESS when an aggregator's write failed (a silently incomplete
// file); ROMIO leaves an fcntl lock held after a failed write (the next rank
// waits forever); HDF5's collective metadata flush skips its barrier on the
// failing rank (a hang in H5Fclose); and a file whose close failed is freed
// but stays registered, so HDF5 crashes at MPI_Finalize. Here HDF5 only writes
// a few KB of header on rank 0, and the ranks agree on every failure.
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace dhess {
namespace hdf5_raw {

struct DatasetSpec {
  std::string name;
  std::vector<int64_t> shape;  // row-major, as h5py reads it
  bool float32 = false;        // float64 otherwise
  double bytes() const;
};

// Throws ResourceError when the file system holding `path` has less room than
// `bytes` of data plus the HDF5 header.
void require_space(const std::string& path, double bytes);

// Creates `path` holding `sets`, their data space allocated (not written, so a
// sparse file) at the returned byte offsets. One process; throws ResourceError.
std::vector<int64_t> create_layout(const std::string& path, const std::vector<DatasetSpec>& sets);

// Collective: rank 0 checks the room and creates the file; every rank gets the
// offsets, or the same ResourceError.
std::vector<int64_t> create_layout(const std::string& path, const std::vector<DatasetSpec>& sets, MPI_Comm comm);

// This rank's share of a file that rank 0 created: plain pwrite()s of large
// contiguous regions, whose errors (unlike those of Open MPI 4.1's collective
// MPI-IO, which drops them) are exact. Failures are noted, never thrown, until
// finish(), which is collective and throws the same ResourceError everywhere.
class RankWriter {
 public:
  RankWriter(const std::string& path, const std::string& what, double bytes, MPI_Comm comm);
  ~RankWriter();
  RankWriter(const RankWriter&) = delete;
  RankWriter& operator=(const RankWriter&) = delete;

  void write(int64_t offset, const void* data, std::size_t bytes);
  // Collective: whether any rank has failed so far (to stop all ranks early).
  bool any_failed();
  // Collective: syncs and closes; on a failure anywhere removes the file and throws.
  void finish();

 private:
  void note(int err, const char* call);
  std::string path_, what_;
  double bytes_;
  MPI_Comm comm_;
  int fd_ = -1;
  std::string failure_;  // this rank's first failure
};

}  // namespace hdf5_raw
}  // namespace dhess
