#pragma once
// ProcessGrid: an MPI communicator and the BLACS contexts over it (the 2D
// grid the Hessian lives on, and the 1×P row the column panels arrive on).
// The only owner of BLACS handles.
#include <mpi.h>

#include <string>
#include <utility>

namespace dhess {

// Near-square pr×pc with pr ≤ pc and pr·pc = ranks.
std::pair<int, int> square_grid(int ranks);

class ProcessGrid {
 public:
  ProcessGrid(MPI_Comm comm, int rows, int cols);
  ~ProcessGrid();
  ProcessGrid(const ProcessGrid&) = delete;
  ProcessGrid& operator=(const ProcessGrid&) = delete;

  MPI_Comm comm() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  int rows() const { return rows_; }
  int cols() const { return cols_; }
  int my_row() const { return my_row_; }
  int my_col() const { return my_col_; }
  int context() const { return context_; }
  // A 1×P context over the same ranks, rank order: where panels are computed.
  int row_context() const { return row_context_; }
  // A P×1 context over the same ranks, rank order: row blocks, as vectors sharded by rows are held.
  int column_context() const { return column_context_; }

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  int rows_, cols_;
  int my_row_ = 0, my_col_ = 0;
  int system_handle_ = -1;
  int context_ = -1;
  int row_context_ = -1;
  int column_context_ = -1;
};

}  // namespace dhess
