#pragma once
// Turns a local failure into the same exception on every rank, so that no rank
// enters a collective call that a failed rank will never reach.
#include <mpi.h>

#include <functional>

namespace dhess {

// Runs `work` on every rank of `comm`, then agrees: if any rank threw, every
// rank throws the error of the lowest failing rank (same class, same message).
void run_collectively(MPI_Comm comm, const std::function<void()>& work);

}  // namespace dhess
