// MemStream: a FILE* that writes into memory (open_memstream), for tests of code that prints to a
// FILE* (progress bars, warnings).
//
//   concurry::testkit::MemStream out;
//   std::fputs("hello", out.file());
//   EXPECT_EQ(out.Contents(), "hello");

#ifndef CONCURRY_TESTING_MEM_STREAM_H_
#define CONCURRY_TESTING_MEM_STREAM_H_

#include <cstdio>
#include <cstdlib>
#include <string>

namespace concurry {
namespace testkit {

// Owns the FILE* and its buffer. Not copyable; single-threaded like any FILE* use in a test.
class MemStream {
 public:
  MemStream() : file_(open_memstream(&buffer_, &size_)) {}
  ~MemStream() {
    std::fclose(file_);
    std::free(buffer_);
  }
  MemStream(const MemStream&) = delete;
  MemStream& operator=(const MemStream&) = delete;

  FILE* file() { return file_; }
  // Everything written so far.
  std::string Contents() {
    std::fflush(file_);
    return std::string(buffer_, size_);
  }

 private:
  char* buffer_ = nullptr;
  size_t size_ = 0;
  FILE* file_;
};

}  // namespace testkit
}  // namespace concurry

#endif  // CONCURRY_TESTING_MEM_STREAM_H_
