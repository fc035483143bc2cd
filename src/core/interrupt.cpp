#include "dhess/core/interrupt.hpp"

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>

#include "dhess/core/errors.hpp"

namespace dhess {
namespace {
volatile std::sig_atomic_t g_signal = 0;
extern "C" void on_stop_signal(int sig) { g_signal = sig; }
}  // namespace

void catch_stop_signals() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  // Restarted, not failed with EINTR: a signal must not turn a checkpoint write into an error.
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  sigaction(SIGUSR1, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

void restore_stop_signals() {
  std::signal(SIGUSR1, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  if (g_signal != 0) std::raise(g_signal);
}

bool stop_requested(MPI_Comm comm) {
  int mine = g_signal != 0 ? 1 : 0, any = 0;
  MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, comm);
  return any != 0;
}

StopWatch::StopWatch(std::string message, bool speak)
    : watcher_([this, message = std::move(message), speak] {
        while (!done_.load()) {
          if (g_signal != 0) {
            if (speak) std::fprintf(stderr, "dhess: error: %s\n", message.c_str());
            std::fflush(stderr);
            std::fflush(stdout);
            _exit(static_cast<int>(ExitCode::interrupted));
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }) {}

StopWatch::~StopWatch() {
  done_ = true;
  watcher_.join();
}

}  // namespace dhess
