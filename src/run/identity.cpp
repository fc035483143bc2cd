#include "dhess/run/identity.hpp"

#include <string>

#include "dhess/io/checkpoint.hpp"

namespace dhess {
namespace {

std::string broadcast(const Rank& r, std::string text) {
  int size = static_cast<int>(text.size());
  MPI_Bcast(&size, 1, MPI_INT, 0, r.comm);
  text.resize(static_cast<std::size_t>(size));
  MPI_Bcast(text.data(), size, MPI_CHAR, 0, r.comm);
  return text;
}

}  // namespace

nlohmann::json problem_identity(const RunOptions& o, const Rank& r, const Loaded& l, const nlohmann::json& settings) {
  const Problem& p = *l.problem;
  nlohmann::json params = nlohmann::json::array();
  for (const auto& info : p.layout().parameters()) params.push_back({info.name, info.shape, info.aliases});
  const bool builtin = o.problem.model.rfind("builtin:", 0) == 0;
  std::string model = builtin ? o.problem.model : "", data;
  if (r.root() && !builtin) model = file_hash(o.problem.model);
  if (r.root() && !o.problem.data.empty()) data = file_hash(o.problem.data);
  return {{"model", broadcast(r, model)},
          {"data", broadcast(r, data)},
          {"loss", p.loss_name()},
          {"curvature", curvature_name(o.problem.curvature)},
          {"dtype", dtype_name(o.problem.dtype)},
          {"n", p.layout().n()},
          {"parameters", params},
          {"train_mode", o.problem.train_mode},
          {"settings", settings}};
}

}  // namespace dhess
