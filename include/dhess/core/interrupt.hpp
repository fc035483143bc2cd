#pragma once
// SIGUSR1/SIGTERM handling: the handler only sets a flag; the assembly loop
// polls it between panel rounds so all ranks stop at the same round.
#include <mpi.h>

namespace dhess {

// Installs the handlers (idempotent). main() does so before anything else, so a
// signal during start-up (loading torch, the model) is not lost.
void catch_stop_signals();
// For commands that never poll the flag: default handling again, and a signal
// that already arrived takes effect now.
void restore_stop_signals();
// True on every rank when any rank received SIGUSR1 or SIGTERM; collective.
bool stop_requested(MPI_Comm comm);

}  // namespace dhess
