#include "dhess/report/plot.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "dhess/core/errors.hpp"

namespace dhess {
namespace {

// $DHESS_PLOT_SCRIPT; else share/dhess/ beside the installed executable (pip install ., cmake
// --install); else the build tree's checkout.
std::string plot_script() {
  const char* chosen = std::getenv("DHESS_PLOT_SCRIPT");
  if (chosen && *chosen) return chosen;
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  const auto installed = exe.parent_path().parent_path() / "share" / "dhess" / "plot_spectrum.py";
  if (!ec && std::filesystem::exists(installed, ec)) return installed.string();
  return DHESS_PLOT_SCRIPT;
}

}  // namespace

std::string draw_spectrum(const std::vector<std::string>& arguments) {
  // $DHESS_PYTHON (the tests' and the Python package's) before the Python dhess was built with.
  const char* python = std::getenv("DHESS_PYTHON");
  std::string command = "'" + std::string(python && *python ? python : DHESS_PYTHON) + "' '" + plot_script() + "'";
  for (const auto& a : arguments) command += " '" + a + "'";
  command += " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return "cannot start " + command;
  std::string output;
  char buf[256];
  while (std::fgets(buf, sizeof buf, pipe)) output += buf;
  int status = pclose(pipe);
  if (status != 0) return "plot script failed: " + first_line(output);
  return "";
}

}  // namespace dhess
