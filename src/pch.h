// Precompiled for the library and the tests: parsing <torch/torch.h> alone costs ~23 s per TU.
#pragma once
#include <torch/torch.h>
