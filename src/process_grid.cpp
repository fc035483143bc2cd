#include "dhess/process_grid.hpp"

#include <cmath>
#include <regex>

#include "dhess/errors.hpp"
#include "dhess/scalapack.hpp"

namespace dhess {

std::pair<int, int> square_grid(int ranks) {
  int rows = static_cast<int>(std::sqrt(static_cast<double>(ranks)));
  while (rows > 1 && ranks % rows != 0) --rows;
  return {rows, ranks / rows};
}

std::pair<int, int> parse_grid(const std::string& text, int ranks) {
  std::smatch m;
  static const std::regex form(R"((\d{1,6})[xX](\d{1,6}))");
  if (!std::regex_match(text, m, form))
    throw UsageError("--grid '" + text + "' is not of the form RxC (e.g. 2x2)");
  int rows = std::stoi(m[1]), cols = std::stoi(m[2]);
  if (rows < 1 || cols < 1 || rows * cols != ranks)
    throw UsageError("--grid " + text + " needs " + std::to_string(rows * cols) + " ranks but the job has " +
                     std::to_string(ranks));
  return {rows, cols};
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
  int r = 0, c = 0;
  Cblacs_gridinfo(context_, &r, &c, &my_row_, &my_col_);
}

ProcessGrid::~ProcessGrid() {
  Cblacs_gridexit(row_context_);
  Cblacs_gridexit(context_);
  Cfree_blacs_system_handle(system_handle_);
}

}  // namespace dhess
