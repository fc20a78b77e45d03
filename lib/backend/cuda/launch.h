/*
 * ELLE_LAUNCH(grid, block, stream, kernel)(args...): how every .cu file
 * launches a kernel, in place of kernel<<<grid, block, 0, stream>>>(args).
 * The same sources then also compile as plain C++ for the host emulation of
 * tests/cuda_emu, whose cuda_runtime.h defines ELLE_LAUNCH to run the grid
 * on the CPU. The kernel comes last because a template kernel's name may
 * hold commas.
 */
#ifndef ELLE_BACKEND_CUDA_LAUNCH_H
#define ELLE_BACKEND_CUDA_LAUNCH_H

#ifndef ELLE_LAUNCH
#define ELLE_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<(grid), (block), 0, (stream)>>>
#endif

#endif
