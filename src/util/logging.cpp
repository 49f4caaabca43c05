#include "anomalysd/util/logging.h"

#include <stdexcept>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace anomalysd {

void setup_logging(const std::string& level) {
  const auto parsed = spdlog::level::from_str(level);
  // from_str maps unknown names to `off`; only accept what was really asked for.
  if (parsed == spdlog::level::off && level != "off")
    throw std::invalid_argument("--log-level '" + level + "' is not one of: trace, debug, info, warn, error, off");
  auto logger = spdlog::stderr_color_mt("anomalysd");
  logger->set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  logger->set_level(parsed);
  spdlog::set_default_logger(logger);
}

}  // namespace anomalysd
