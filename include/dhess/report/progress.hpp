#pragma once
// Progress lines on rank 0 for long runs: done/total, rate, ETA. Plain lines
// every few seconds in batch logs; one rewritten line on a terminal.
#include <chrono>
#include <cstdint>
#include <string>

namespace dhess {

class Progress {
 public:
  Progress(std::string what, int64_t total, bool enabled);
  // Reports `done` items (cumulative), at most every interval.
  void update(int64_t done);
  void finish();

 private:
  using Clock = std::chrono::steady_clock;
  void print(int64_t done, bool last);
  std::string what_;
  int64_t total_;
  bool enabled_;
  bool terminal_;
  double interval_;
  Clock::time_point start_, last_;
  int64_t done_ = 0;
};

}  // namespace dhess
