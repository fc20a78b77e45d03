/* Shared by the emulator's files (not by the code under test). */
#ifndef ELLE_CUDA_EMU_INTERNAL_H
#define ELLE_CUDA_EMU_INTERNAL_H

#include "cuda_runtime_api.h"

namespace elle_emu {
/* Record err as the calling thread's last error (cudaGetLastError). */
void set_last_error(cudaError_t err);
/* Counts a kernel launch; true when it is the one elle_emu_fail_nth_launch
 * chose. */
bool launch_should_fail();
}

#endif
