#pragma once
// JSON files (layout.json, summary.json, plans).
#include <nlohmann/json.hpp>
#include <string>

namespace dhess {

// Writes `value` to `path` (pretty-printed); throws ResourceError when it cannot.
void write_json(const std::string& path, const nlohmann::json& value);

}  // namespace dhess
