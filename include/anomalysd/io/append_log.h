// A line log that survives `kill -9`: each line is appended with one write() and synced before
// the call returns, so the file holds whole lines only, except at worst a torn last line after a
// power loss, which the reader drops (and `repair_line_log` cuts off before appending again).
#pragma once

#include <string>
#include <vector>

namespace anomalysd {

class LineLog {
 public:
  explicit LineLog(std::string path);  // opens (creates) for appending; FormatError naming the file
  LineLog(const LineLog&) = delete;
  LineLog& operator=(const LineLog&) = delete;
  ~LineLog();

  // Appends `line` + '\n' (the line must not hold '\n') and syncs it to disk.
  void append(const std::string& line);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// The complete ('\n'-terminated) lines of a log; a missing file has none.
std::vector<std::string> read_line_log(const std::string& path);

// Cuts a torn last line (bytes after the last '\n') off the file; returns whether it cut any.
bool repair_line_log(const std::string& path);

}  // namespace anomalysd
