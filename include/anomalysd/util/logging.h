#pragma once

#include <string>

namespace anomalysd {

// Console logging to stderr (stdout stays clean for command output).
// `level`: trace | debug | info | warn | error | off. Throws InputError otherwise.
void setup_logging(const std::string& level);

}  // namespace anomalysd
