// dhess layout and dhess export: what the model is, before any Hessian.
#include "dhess/core/collective.hpp"
#include "dhess/io/json_file.hpp"
#include "dhess/io/output_dir.hpp"
#include "dhess/plan/plan_run.hpp"
#include "dhess/run/setup.hpp"

namespace dhess {

void run_layout(const RunOptions& o, MPI_Comm comm) {
  Rank r(comm);
  Loaded l = load(o, r);
  OutputDir out(o.out, o.force, comm);
  say(r, o, "dhess: " + l.problem->description() + "\n" + l.problem->layout().table());
  run_collectively(comm, [&] {
    if (r.root()) write_json(out.staged("layout.json"), l.problem->layout().to_json());
  });
  out.commit({"layout.json"});
  say(r, o, "dhess: wrote " + out.final_path("layout.json") + "\n");
}

void run_export(const RunOptions& o, const std::string& model_path, const std::string& data_path, MPI_Comm comm) {
  Rank r(comm);
  Loaded l = load(o, r);
  run_collectively(comm, [&] {
    if (r.root()) l.problem->export_to(model_path, data_path);
  });
  say(r, o, "dhess: wrote " + model_path + " and " + data_path + " (" + l.problem->description() + ")\n");
}

}  // namespace dhess
