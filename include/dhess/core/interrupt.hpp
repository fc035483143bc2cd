#pragma once
// SIGUSR1/SIGTERM handling: the handler only sets a flag. Loops that make collective steps poll it
// so that all ranks stop at the same step; a blocking library call (the eigensolver) that cannot
// poll runs inside a StopWatch, which ends the process from a watcher thread instead.
#include <mpi.h>

#include <atomic>
#include <string>
#include <thread>

namespace dhess {

// Installs the handlers (idempotent, SA_RESTART). main() does so before anything else, so a
// signal during start-up (loading torch, the model) is not lost.
void catch_stop_signals();
// For commands that never poll the flag: default handling again, and a signal that already
// arrived takes effect now.
void restore_stop_signals();
// True on every rank when any rank received SIGUSR1 or SIGTERM; collective.
bool stop_requested(MPI_Comm comm);

// While alive, a stop signal makes this process print `message` (when `speak`) and exit with 75
// within a fraction of a second. SLURM's --signal (without B:) and mpirun deliver the signal to
// every rank, so every rank exits; the job launcher ends any that did not.
class StopWatch {
 public:
  StopWatch(std::string message, bool speak);
  ~StopWatch();
  StopWatch(const StopWatch&) = delete;
  StopWatch& operator=(const StopWatch&) = delete;

 private:
  std::atomic<bool> done_{false};
  std::thread watcher_;
};

}  // namespace dhess
