// The transport between a Mode::kProcess worker and its process: length-prefixed frames over a
// Unix stream socket. Small frames are batched into one send; large payloads go straight from
// the caller's string to the socket and from the socket into the receiver's string, without a
// copy through a buffer. File descriptors ride along a frame as SCM_RIGHTS (the limits' shared
// memory at construction).
//
// Frame: a 16-byte header (magic, kind, payload length; host byte order, since both ends are
// one program on one host), then the payload. Both ends trust the framing, not the contents: a
// payload that does not decode is answered with an error, and the worker keeps serving; a
// header with the wrong magic means the stream is broken, and the connection ends.

#ifndef CONCURRY_WORKERS_PROCESS_INTERNAL_WIRE_H_
#define CONCURRY_WORKERS_PROCESS_INTERNAL_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace concurry::process_internal {

enum class FrameKind : uint32_t {
  // Parent to child, first frame: Encode(class name, constructor bytes, limits blueprint), with
  // the limits' file descriptors attached.
  kConstruct = 1,
  // Parent to child: a call. Payload: the method name's length (uint32), the name, the
  // EncodeCall bytes.
  kCall = 2,
  // Parent to child: the call running now finishes; the calls queued behind it are cancelled (they
  // are answered with CancelledError without running); then the process destroys the object and
  // exits.
  kStop = 3,
  // Child to parent: the reply (EncodeReply / EncodeErrorReply bytes) to the construction or to
  // a call; exactly one per kConstruct or kCall frame (also for a malformed one), in order.
  kReply = 4,
  // Parent to child: cancel call number N (uint64; calls are numbered from 0 in the order of
  // their kCall frames) if it has not started: it is answered with CancelledError. Too late for
  // a call that started or finished: ignored.
  kCancel = 5,
};

inline constexpr size_t kFrameHeaderBytes = 16;
// The largest payload a frame may carry (a header claiming more is a broken stream).
inline constexpr uint64_t kMaxFramePayload = uint64_t{1} << 40;

// The start of a kCall frame's payload, before the argument bytes.
std::string CallPrefix(absl::string_view method);
// Splits a kCall payload into the method name and the argument bytes; false when malformed.
bool ParseCallPayload(absl::string_view payload, absl::string_view* method,
                      absl::string_view* args);

// Writes frames to a socket; one writer at a time (not thread-safe). Never raises SIGPIPE.
class FrameWriter {
 public:
  explicit FrameWriter(int fd) : fd_(fd) {}

  // Queues a frame whose payload is `a` followed by `b`. A large payload is sent at once, after
  // what is queued, straight from `a` and `b`. Returns false once the socket is broken (the peer
  // is gone); the frame is then lost.
  bool Append(FrameKind kind, absl::string_view a, absl::string_view b = {});
  // Sends what is queued. Blocks while the socket is full. Returns false once broken.
  bool Flush();
  // Sends what the socket takes now without blocking; the rest stays queued for the next Flush.
  // Returns false once broken.
  bool FlushNow();
  // Bytes queued and not sent yet.
  size_t buffered() const { return buffer_.size(); }
  // Sends a frame with `fds` attached (after what is queued). Returns false once broken.
  bool SendWithFds(FrameKind kind, absl::string_view payload, absl::Span<const int> fds);

 private:
  // Sends every part; with `wait` false, stops at a full socket and returns the count of bytes
  // sent in *sent. Returns false once broken.
  bool SendAll(absl::Span<const absl::string_view> parts, absl::Span<const int> fds,
               bool wait = true, size_t* sent = nullptr);

  const int fd_;
  std::string buffer_;
  bool broken_ = false;
};

struct Frame {
  FrameKind kind = FrameKind::kReply;
  std::string payload;
};

// Reads frames from a socket; one reader at a time (not thread-safe).
class FrameReader {
 public:
  enum class Status {
    kFrame,   // *frame holds the next frame.
    kEof,     // The peer closed the socket (or died) between frames.
    kBroken,  // A read failed, the peer closed in the middle of a frame, or a header was bad.
  };

  // `ended_fd` (optional): a descriptor that becomes readable when the peer has ended (its
  // pidfd). Then the stream ends once the socket has nothing left to read, even if another
  // process still holds the peer's end open (a child the worker forked).
  explicit FrameReader(int fd, int ended_fd = -1) : fd_(fd), ended_fd_(ended_fd) {}

  // Reads the next frame, blocking as needed.
  Status Next(Frame* frame);
  // Whether a whole frame is buffered already (Next would not block).
  bool HasFrame() const;
  // The payload length of the next frame, when its header is buffered; else 0.
  uint64_t BufferedFrameLength() const;
  // Bytes read from the socket and not returned by Next yet.
  size_t buffered_bytes() const { return end_ - start_; }
  // Reads what the socket holds now, without blocking (then HasFrame() may turn true), stopping
  // once `limit` bytes or more were read. Returns false at the end of the stream or on an error.
  bool ReadAvailable(size_t limit = SIZE_MAX);
  // File descriptors received so far with the frames (the caller owns them now).
  std::vector<int> TakeFds();
  // Why Next returned kBroken.
  const std::string& error() const { return error_; }

 private:
  // Reads once into the buffer; returns the byte count (0 at end of stream, -1 on error; with
  // `wait` false, -2 when nothing is there).
  ssize_t Fill(char* into, size_t size, bool wait = true);

  const int fd_;
  const int ended_fd_;
  std::string buffer_;
  size_t start_ = 0;  // First unread byte of buffer_.
  size_t end_ = 0;    // One past the last byte read into buffer_.
  std::vector<int> fds_;
  std::string error_;
};

}  // namespace concurry::process_internal

#endif  // CONCURRY_WORKERS_PROCESS_INTERNAL_WIRE_H_
