#include "anomalysd/io/append_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "anomalysd/io/errors.h"

namespace anomalysd {

LineLog::LineLog(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw FormatError(path_, std::string("cannot open for appending: ") + std::strerror(errno));
}

LineLog::~LineLog() {
  if (fd_ >= 0) ::close(fd_);
}

void LineLog::append(const std::string& line) {
  if (line.find('\n') != std::string::npos) throw InputError(path_ + ": a log line may not hold a newline");
  const std::string bytes = line + "\n";
  // One write() for the whole line: a killed process leaves it whole or absent.
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw FormatError(path_, std::string("cannot append: ") + std::strerror(errno));
    done += static_cast<std::size_t>(n);
  }
  if (::fdatasync(fd_) != 0) throw FormatError(path_, std::string("cannot sync: ") + std::strerror(errno));
}

std::vector<std::string> read_line_log(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path, std::ios::binary);
  if (!in) return lines;
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  std::size_t start = 0;
  for (std::size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) lines.push_back(text.substr(start, end - start));
  return lines;
}

bool repair_line_log(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  const auto last = text.find_last_of('\n');
  const std::size_t keep = last == std::string::npos ? 0 : last + 1;
  if (keep == text.size()) return false;
  std::filesystem::resize_file(path, keep, ec);
  if (ec) throw FormatError(path, "cannot cut its torn last line: " + ec.message());
  return true;
}

}  // namespace anomalysd
