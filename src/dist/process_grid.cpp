#include "dhess/dist/process_grid.hpp"

#include <cmath>

#include "blacs.hpp"
#include "dhess/core/errors.hpp"

namespace dhess {

std::pair<int, int> square_grid(int ranks) {
  int rows = static_cast<int>(std::sqrt(static_cast<double>(ranks)));
  while (rows > 1 && ranks % rows != 0) --rows;
  return {rows, ranks / rows};
}

ProcessGrid::ProcessGrid(MPI_Comm comm, int rows, int cols) : comm_(comm), rows_(rows), cols_(cols) {
  MPI_Comm_rank(comm, &rank_);
  MPI_Comm_size(comm, &size_);
  if (rows * cols != size_)
    throw UsageError("a " + std::to_string(rows) + "x" + std::to_string(cols) + " grid needs " +
                     std::to_string(rows * cols) + " ranks but the job has " + std::to_string(size_));
  system_handle_ = Csys2blacs_handle(comm);
  context_ = system_handle_;
  Cblacs_gridinit(&context_, "R", rows, cols);
  row_context_ = system_handle_;
  Cblacs_gridinit(&row_context_, "R", 1, size_);
  column_context_ = system_handle_;
  Cblacs_gridinit(&column_context_, "C", size_, 1);
  int r = 0, c = 0;
  Cblacs_gridinfo(context_, &r, &c, &my_row_, &my_col_);
}

ProcessGrid::~ProcessGrid() {
  Cblacs_gridexit(column_context_);
  Cblacs_gridexit(row_context_);
  Cblacs_gridexit(context_);
  Cfree_blacs_system_handle(system_handle_);
}

}  // namespace dhess
