#pragma once
// Error classes of dhess. Each class maps to one exit code so that job
// scripts can tell a user mistake from a resource problem or a bug.
#include <stdexcept>
#include <string>

namespace dhess {

enum class ExitCode : int {
  ok = 0,
  usage = 64,        // bad flags or flag values (sysexits EX_USAGE)
  input = 65,        // bad model, data or checkpoint (EX_DATAERR)
  internal = 70,     // a bug or a failing library call (EX_SOFTWARE)
  resource = 74,     // memory, disk, unwritable paths (EX_IOERR)
  interrupted = 75,  // stopped by a signal after writing a checkpoint (EX_TEMPFAIL)
};

class Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& what) : std::runtime_error(what), code_(code) {}
  ExitCode code() const { return code_; }
  // True when every rank holds this same error (it came out of run_collectively),
  // so the ranks can exit together instead of aborting the job.
  bool agreed() const { return agreed_; }
  void mark_agreed() { agreed_ = true; }

 private:
  ExitCode code_;
  bool agreed_ = false;
};

struct UsageError : Error {
  explicit UsageError(const std::string& w) : Error(ExitCode::usage, w) {}
};
struct InputError : Error {
  explicit InputError(const std::string& w) : Error(ExitCode::input, w) {}
};
struct ResourceError : Error {
  explicit ResourceError(const std::string& w) : Error(ExitCode::resource, w) {}
};
struct InternalError : Error {
  explicit InternalError(const std::string& w) : Error(ExitCode::internal, w) {}
};
struct Interrupted : Error {
  explicit Interrupted(const std::string& w) : Error(ExitCode::interrupted, w) {}
};

// Makes an error message one line: torch and HDF5 messages span many.
std::string first_line(const std::string& message);

}  // namespace dhess
