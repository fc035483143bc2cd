#include "dhess/report/progress.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace dhess {

Progress::Progress(std::string what, int64_t total, bool enabled)
    : what_(std::move(what)),
      total_(total),
      enabled_(enabled),
      // Open MPI hands ranks a pseudo-terminal even when mpirun's output goes to a
      // batch log, so under mpirun/srun progress is always plain lines.
      terminal_(isatty(STDOUT_FILENO) == 1 && !std::getenv("OMPI_COMM_WORLD_SIZE") && !std::getenv("SLURM_PROCID")),
      interval_(terminal_ ? 0.5 : 10.0),
      start_(Clock::now()),
      last_(start_) {}

void Progress::update(int64_t done) {
  done_ = done;
  if (!enabled_) return;
  auto now = Clock::now();
  if (std::chrono::duration<double>(now - last_).count() < interval_) return;
  last_ = now;
  print(done, false);
}

void Progress::finish() {
  if (enabled_ && terminal_) print(done_, true);
}

void Progress::print(int64_t done, bool last) {
  double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
  double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0;
  double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : 0;
  double pct = total_ > 0 ? 100.0 * static_cast<double>(done) / static_cast<double>(total_) : 100.0;
  char line[200];
  std::snprintf(line, sizeof line, "%s %lld/%lld (%.1f%%)  %.1f/s  elapsed %.0fs  ETA %.0fs", what_.c_str(),
                static_cast<long long>(done), static_cast<long long>(total_), pct, rate, elapsed, eta);
  if (terminal_)
    std::printf("\r%s\033[K%s", line, last ? "\n" : "");
  else
    std::printf("%s\n", line);
  std::fflush(stdout);
}

}  // namespace dhess
