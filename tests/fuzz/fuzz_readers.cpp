// libFuzzer target over the readers of files users and crashed runs leave
// behind: .npy arrays and checkpoint panels. Any input must end in a value or
// a dhess::Error, never a crash, a sanitizer report or an unbounded allocation.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dhess/core/errors.hpp"
#include "dhess/io/checkpoint.hpp"
#include "dhess/io/npy.hpp"

namespace {

const std::string& scratch_path() {
  static const std::string path = [] {
    std::string p = "/tmp/dhess-fuzz-" + std::to_string(getpid());
    std::atexit([] { std::remove(scratch_path().c_str()); });
    return p;
  }();
  return path;
}

std::string scratch_file(const uint8_t* data, size_t size) {
  const std::string& path = scratch_path();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return path;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = scratch_file(data, size);
  try {
    dhess::read_npy(path);
  } catch (const dhess::Error&) {
  }
  // A panel of a small problem: n = 7, columns [2, 5).
  std::vector<double> panel(7 * 3);
  try {
    dhess::read_panel<double>(path, 2, 5, 7, panel.data());
  } catch (const dhess::Error&) {
  }
  std::vector<float> panel32(7 * 3);
  try {
    dhess::read_panel<float>(path, 2, 5, 7, panel32.data());
  } catch (const dhess::Error&) {
  }
  return 0;
}
