#pragma once
// Problem: a model, its data and a loss, with the parameters the Hessian is
// taken over. The torch objects stay behind a pointer so that this header can
// be included without torch.
#include <cstdint>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "dhess/core/dtype.hpp"
#include "dhess/core/layout.hpp"

namespace dhess {

// Mean-reduced losses of the model's output and the targets, or `none`: forward returns the loss.
enum class Loss { cross_entropy, mse, nll, bce_with_logits, none };
const char* loss_name(Loss loss);

// The curvature matrix of the loss a run computes: the Hessian; the generalized Gauss-Newton
// matrix Jᵀ H_L J (J the Jacobian of the model's outputs, H_L the Hessian of the loss in them:
// positive semi-definite for the convex losses); the empirical Fisher, the mean of the gradient
// outer products of the loss's terms (its rank is at most their number).
enum class Curvature { hessian, ggn, ef };
const char* curvature_name(Curvature curvature);   // "hessian", "ggn", "ef"
const char* curvature_title(Curvature curvature);  // "Hessian", "Gauss-Newton matrix", "empirical Fisher"

struct ProblemSpec {
  std::string model;         // TorchScript file, or builtin:NAME[:SIZE]
  std::string data;          // torch.save file; empty for builtins or --loss none
  std::optional<Loss> loss;  // unset: the built-in model's own
  Curvature curvature = Curvature::hessian;
  std::string params_text;           // --params as given, for messages; empty = every parameter
  std::optional<std::regex> params;  // keep parameters whose name matches (std::regex_search)
  int64_t batch_size = 0;            // micro-batch size; 0 = the whole data set at once
  bool train_mode = false;
  Dtype dtype = Dtype::float64;
  std::string device = "cpu";  // a torch device string such as "cpu" or "cuda:1"
};

// What one gradient pass over this rank's samples found (all of them, or its data shard: the
// shards' parts sum to the whole data set's).
struct ProblemCheck {
  double loss = 0;
  double gradient_norm = 0;                    // of the whole data set's gradient (set by run/)
  std::vector<double> gradient;                // flattened in layout order; emptied once summed
  std::vector<std::string> unused_parameters;  // the loss does not depend on them
};

class HvpEngine;

class Problem {
 public:
  // Loads and validates model and data; throws InputError/UsageError naming the
  // file, parameter or shape that is wrong.
  explicit Problem(const ProblemSpec& spec);
  ~Problem();
  Problem(Problem&&) noexcept;
  Problem& operator=(Problem&&) noexcept;

  const ProblemSpec& spec() const;
  const ParameterLayout& layout() const;
  int64_t num_samples() const;
  int64_t num_micro_batches() const;
  std::string loss_name() const;
  // One line saying what the model is ("builtin convnet: Conv2d(1,32,3,1,1) -> ...").
  std::string description() const;

  // Keeps only the samples of shard `rank` of `size` (contiguous, sizes within
  // one sample), split into micro-batches of --batch-size; weights stay those of
  // the whole data set, so the shards' Hessians sum to H exactly.
  void keep_shard(int rank, int size);

  // Refuses (UsageError, with the cause and the fix) when evaluating the data in the pieces a
  // run makes of it -- micro-batches of --batch-size within each of `shards` data shards --
  // changes the loss: BatchNorm in train mode, or a --loss none forward that is not a mean over
  // its samples. Such a split would silently give the Hessian of another loss. Compares the first
  // two pieces evaluated together with their weighted mean evaluated apart.
  void require_separable(int shards) const;

  // One forward/backward pass over this rank's micro-batches: loss, gradient, unused parameters;
  // throws on shapes the model rejects, a non-scalar or non-finite loss.
  ProblemCheck check();

  // The samples in the largest micro-batch this rank evaluates at once (0 without data).
  int64_t largest_micro_batch() const;
  // The peak memory (bytes) of the first pass -- loss, gradient with its graph, one Hessian-vector
  // product -- over the first `samples` samples as one micro-batch, from a heap given back to the
  // kernel (glibc would otherwise reuse what earlier passes freed and hide it).
  double pass_memory(int64_t samples) const;

  // Writes the model (TorchScript) and data (torch.save format) to files that
  // Python's torch.jit.load / torch.load read: how builtins are reproduced.
  void export_to(const std::string& model_path, const std::string& data_path) const;

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// Names and descriptions of the built-in models, for --help and errors.
std::vector<std::string> builtin_model_names();

}  // namespace dhess
