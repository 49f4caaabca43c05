#pragma once

#include <string>

namespace anomalysd {

const char* project_version();  // "0.1.0"
std::string libtorch_version();  // "1.13.0"

// Multi-line report for `anomalysd --version`: project and LibTorch versions, the BLAS library
// actually loaded (Debian's LibTorch uses whichever libblas.so.3 is selected), threads, CUDA.
std::string version_report();

}  // namespace anomalysd
