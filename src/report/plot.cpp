#include "dhess/report/plot.hpp"

#include <cstdio>
#include <cstdlib>

#include "dhess/core/errors.hpp"

#ifndef DHESS_PLOT_SCRIPT
#define DHESS_PLOT_SCRIPT "plot_spectrum.py"
#endif

namespace dhess {

std::string draw_spectrum(const std::vector<std::string>& arguments) {
  const char* script = std::getenv("DHESS_PLOT_SCRIPT");
  const char* python = std::getenv("DHESS_PYTHON");
  std::string command =
      std::string(python ? python : "/usr/bin/python3") + " '" + (script ? script : DHESS_PLOT_SCRIPT) + "'";
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
