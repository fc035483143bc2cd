#include "dhess/io/json_file.hpp"

#include <fstream>

#include "dhess/core/errors.hpp"

namespace dhess {

void write_json(const std::string& path, const nlohmann::json& value) {
  std::ofstream out(path, std::ios::trunc);
  out << value.dump(2) << "\n";
  out.flush();
  if (!out) throw ResourceError("cannot write '" + path + "' (disk full or not writable?)");
}

}  // namespace dhess
