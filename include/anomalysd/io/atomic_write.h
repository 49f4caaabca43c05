// Crash-safe file output: bytes go to a temporary file beside the target, which is synced and
// renamed over the target only when complete. A failure or crash never leaves a half-written
// file under the final name, nor touches what was there before.
#pragma once

#include <cstddef>
#include <string>

namespace anomalysd {

class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);  // creates the temporary file; throws FormatError
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();  // removes the temporary file unless commit() succeeded

  void write(const void* data, std::size_t size);
  void write(const std::string& text) { write(text.data(), text.size()); }
  void commit();  // fsync + rename onto the final path

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

void write_file_atomically(const std::string& path, const std::string& contents);

// Removes what a killed writer left behind under `dir` (recursively): files named
// "<target>.tmp-XXXXXX" by AtomicFileWriter. Long jobs call it when they start or resume.
// Returns how many were removed.
int remove_stale_temporaries(const std::string& dir);

// An exclusive advisory lock (flock) on `path` (created if missing), held for the object's
// lifetime: processes that read-decide-write one shared file take it so that the first decision
// is the only one. Blocks until the lock is free. A lock file that cannot be opened (read-only
// folder) leaves the object unlocked: locked() says which.
class FileLock {
 public:
  explicit FileLock(const std::string& path);
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock();
  bool locked() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace anomalysd
