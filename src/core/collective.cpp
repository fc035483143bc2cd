#include "dhess/core/collective.hpp"

#include <exception>
#include <string>
#include <vector>

#include "dhess/core/errors.hpp"

namespace dhess {

void run_collectively(MPI_Comm comm, const std::function<void()>& work) {
  int code = 0;
  std::string message;
  try {
    work();
  } catch (const Error& e) {
    code = static_cast<int>(e.code());
    message = e.what();
  } catch (const std::bad_alloc&) {
    code = static_cast<int>(ExitCode::resource);
    message = "out of memory";
  } catch (const std::exception& e) {
    message = first_line(e.what());
    // A device allocator that ran out (torch's "CUDA out of memory. Tried to allocate ...") is short
    // of a resource, not a bug.
    const bool exhausted = message.find("out of memory") != std::string::npos;
    code = static_cast<int>(exhausted ? ExitCode::resource : ExitCode::internal);
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  int mine = code != 0 ? rank : size;
  int first = size;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm);
  if (first == size) return;

  int header[2] = {code, static_cast<int>(message.size())};
  MPI_Bcast(header, 2, MPI_INT, first, comm);
  std::vector<char> text(message.begin(), message.end());
  text.resize(header[1]);
  MPI_Bcast(text.data(), header[1], MPI_CHAR, first, comm);
  std::string what(text.begin(), text.end());
  if (first != 0 && size > 1) what += " (on rank " + std::to_string(first) + ")";
  Error agreed(static_cast<ExitCode>(header[0]), what);
  agreed.mark_agreed();
  throw agreed;
}

}  // namespace dhess
