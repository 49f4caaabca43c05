#pragma once

#include <string>

namespace anomalysd {

// Console logging to stderr (stdout stays clean for command output).
// `level`: trace | debug | info | warn | error | off. Throws std::invalid_argument otherwise (the
// CLI checks the option first, so that a wrong level is a usage error, exit 2).
void setup_logging(const std::string& level);

}  // namespace anomalysd
