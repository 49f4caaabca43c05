// Typed errors: each names the file (or option) and the key it is about, so that `main`
// can print one line that tells the user what to fix. The CLI maps them to exit codes.
#pragma once

#include <stdexcept>
#include <string>

namespace anomalysd {

// Base of every error caused by the user's input (files, configs, options): exit code 2.
class InputError : public std::runtime_error {
 public:
  explicit InputError(const std::string& message) : std::runtime_error(message) {}
};

// A file that is missing, unreadable or not in the format it claims (safetensors, JSON, images).
class FormatError : public InputError {
 public:
  FormatError(std::string path, const std::string& message)
      : InputError(path + ": " + message), path_(std::move(path)) {}
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A config key that is unknown, of the wrong type or out of range; `where` is
// "file:line:col" or "--set key=value".
class ConfigError : public InputError {
 public:
  ConfigError(std::string where, std::string key, const std::string& message)
      : InputError(where + ": " + message), where_(std::move(where)), key_(std::move(key)) {}
  const std::string& where() const { return where_; }
  const std::string& key() const { return key_; }

 private:
  std::string where_;
  std::string key_;
};

// Tensors whose shapes or dtypes do not fit together.
class ShapeError : public InputError {
 public:
  explicit ShapeError(const std::string& message) : InputError(message) {}
};

}  // namespace anomalysd
