// Which BLAS library the process has loaded: Debian's LibTorch calls whichever libblas.so.3 is
// selected, and the reference one makes matrix products ~30× slower. Below every layer that needs
// it (`--version`'s report, the CPU GEMM choice's machine key).
#pragma once

#include <string>

namespace anomalysd {

// Path of the loaded BLAS library (resolved symlinks) and its self-description, or "" if none found.
std::string loaded_blas();

}  // namespace anomalysd
