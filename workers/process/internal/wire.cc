#include "workers/process/internal/wire.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace concurry::process_internal {
namespace {

constexpr uint32_t kMagic = 0x43435259;  // "CCRY"
// Frames up to this size are copied into the batch buffer; larger ones are sent in place.
constexpr size_t kInlinePayload = 16 * 1024;
// A batch this large is sent without waiting for Flush.
constexpr size_t kBatchBytes = 64 * 1024;
// The reader's buffer grows to hold a frame up to this size; larger payloads are received
// straight into their own string.
constexpr size_t kReadChunk = 256 * 1024;
// At most this many descriptors per frame.
constexpr size_t kMaxFds = 64;

void PutHeader(char* out, FrameKind kind, uint64_t length) {
  const uint32_t magic = kMagic;
  const uint32_t k = static_cast<uint32_t>(kind);
  std::memcpy(out, &magic, 4);
  std::memcpy(out + 4, &k, 4);
  std::memcpy(out + 8, &length, 8);
}

}  // namespace

std::string CallPrefix(absl::string_view method) {
  std::string prefix;
  prefix.reserve(4 + method.size());
  const uint32_t length = static_cast<uint32_t>(method.size());
  prefix.append(reinterpret_cast<const char*>(&length), 4);
  prefix.append(method.data(), method.size());
  return prefix;
}

bool ParseCallPayload(absl::string_view payload, absl::string_view* method,
                      absl::string_view* args) {
  if (payload.size() < 4) return false;
  uint32_t length = 0;
  std::memcpy(&length, payload.data(), 4);
  if (length > payload.size() - 4) return false;
  *method = payload.substr(4, length);
  *args = payload.substr(4 + length);
  return true;
}

bool FrameWriter::Append(FrameKind kind, absl::string_view a, absl::string_view b) {
  if (broken_) return false;
  const size_t length = a.size() + b.size();
  if (length <= kInlinePayload) {
    const size_t at = buffer_.size();
    buffer_.resize(at + kFrameHeaderBytes);
    PutHeader(buffer_.data() + at, kind, length);
    buffer_.append(a.data(), a.size());
    buffer_.append(b.data(), b.size());
    return buffer_.size() < kBatchBytes || Flush();
  }
  char header[kFrameHeaderBytes];
  PutHeader(header, kind, length);
  const absl::string_view parts[] = {buffer_, absl::string_view(header, sizeof(header)), a, b};
  const bool sent = SendAll(parts, {});
  buffer_.clear();
  return sent;
}

bool FrameWriter::Flush() {
  if (broken_) return false;
  if (buffer_.empty()) return true;
  const absl::string_view parts[] = {buffer_};
  const bool sent = SendAll(parts, {});
  buffer_.clear();
  return sent;
}

bool FrameWriter::SendWithFds(FrameKind kind, absl::string_view payload,
                              absl::Span<const int> fds) {
  if (!Flush()) return false;
  char header[kFrameHeaderBytes];
  PutHeader(header, kind, payload.size());
  const absl::string_view parts[] = {absl::string_view(header, sizeof(header)), payload};
  return SendAll(parts, fds);
}

bool FrameWriter::FlushNow() {
  if (broken_) return false;
  if (buffer_.empty()) return true;
  const absl::string_view parts[] = {buffer_};
  size_t sent = 0;
  const bool ok = SendAll(parts, {}, /*wait=*/false, &sent);
  buffer_.erase(0, sent);
  return ok;
}

bool FrameWriter::SendAll(absl::Span<const absl::string_view> parts, absl::Span<const int> fds,
                          bool wait, size_t* total) {
  if (fds.size() > kMaxFds) {
    broken_ = true;
    return false;
  }
  std::vector<iovec> iov;
  for (absl::string_view part : parts) {
    if (!part.empty()) iov.push_back({const_cast<char*>(part.data()), part.size()});
  }
  size_t first = 0;
  // Descriptors go with the first sendmsg, which carries at least one byte.
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  bool fds_pending = !fds.empty();
  while (first < iov.size()) {
    msghdr message{};
    message.msg_iov = iov.data() + first;
    message.msg_iovlen = std::min<size_t>(iov.size() - first, IOV_MAX);
    if (fds_pending) {
      std::memset(control, 0, sizeof(control));
      message.msg_control = control;
      message.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* cmsg = CMSG_FIRSTHDR(&message);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
    }
    const ssize_t sent = sendmsg(fd_, &message, MSG_NOSIGNAL | (wait ? 0 : MSG_DONTWAIT));
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (!wait && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      broken_ = true;
      return false;
    }
    if (total != nullptr) *total += static_cast<size_t>(sent);
    fds_pending = false;
    size_t left = static_cast<size_t>(sent);
    while (first < iov.size() && left >= iov[first].iov_len) {
      left -= iov[first].iov_len;
      ++first;
    }
    if (left > 0) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return true;
}

ssize_t FrameReader::Fill(char* into, size_t size, bool wait) {
  for (;;) {
    // Waits in poll, not in recvmsg: a recvmsg sleeper is also woken (for nothing) each time the
    // peer reads what this end sent, since the kernel then announces room to write to every
    // sleeper on the socket; a poll sleeper asks for input only and sleeps on.
    if (wait) {
      pollfd fds[2] = {{fd_, POLLIN, 0}, {ended_fd_, POLLIN, 0}};
      if (poll(fds, ended_fd_ >= 0 ? 2 : 1, -1) < 0) {
        if (errno == EINTR) continue;
        error_ = absl::StrCat("waiting on the worker socket failed: ", std::strerror(errno));
        return -1;
      }
      if (fds[0].revents == 0 && fds[1].revents != 0) return 0;  // Ended, nothing left to read.
    }
    iovec iov{into, size};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msghdr message{};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof(control);
    const ssize_t got = recvmsg(fd_, &message, MSG_CMSG_CLOEXEC | (wait ? 0 : MSG_DONTWAIT));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && !wait && (errno == EAGAIN || errno == EWOULDBLOCK)) return -2;
    if (got < 0) {
      error_ = absl::StrCat("reading the worker socket failed: ", std::strerror(errno));
      return -1;
    }
    for (cmsghdr* cmsg = CMSG_FIRSTHDR(&message); cmsg != nullptr;
         cmsg = CMSG_NXTHDR(&message, cmsg)) {
      if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
        const size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
          fds_.push_back(fd);
        }
      }
    }
    return got;
  }
}

bool FrameReader::HasFrame() const {
  if (end_ - start_ < kFrameHeaderBytes) return false;
  uint64_t length = 0;
  std::memcpy(&length, buffer_.data() + start_ + 8, 8);
  return end_ - start_ - kFrameHeaderBytes >= length;
}

uint64_t FrameReader::BufferedFrameLength() const {
  if (end_ - start_ < kFrameHeaderBytes) return 0;
  uint64_t length = 0;
  std::memcpy(&length, buffer_.data() + start_ + 8, 8);
  return length;
}

bool FrameReader::ReadAvailable(size_t limit) {
  for (size_t read = 0; read < limit;) {
    if (start_ > 0) {
      std::memmove(buffer_.data(), buffer_.data() + start_, end_ - start_);
      end_ -= start_;
      start_ = 0;
    }
    if (buffer_.size() - end_ < kReadChunk / 4) buffer_.resize(end_ + kReadChunk);
    const ssize_t got = Fill(buffer_.data() + end_, buffer_.size() - end_, /*wait=*/false);
    if (got == -2) return true;
    if (got <= 0) return false;
    end_ += static_cast<size_t>(got);
    read += static_cast<size_t>(got);
  }
  return true;
}

FrameReader::Status FrameReader::Next(Frame* frame) {
  // The header.
  while (end_ - start_ < kFrameHeaderBytes) {
    if (start_ > 0) {
      std::memmove(buffer_.data(), buffer_.data() + start_, end_ - start_);
      end_ -= start_;
      start_ = 0;
    }
    if (buffer_.size() < kReadChunk) buffer_.resize(kReadChunk);
    const ssize_t got = Fill(buffer_.data() + end_, buffer_.size() - end_);
    if (got < 0) return Status::kBroken;
    if (got == 0) {
      if (end_ == start_) return Status::kEof;
      error_ = "the worker socket closed in the middle of a frame header";
      return Status::kBroken;
    }
    end_ += static_cast<size_t>(got);
  }
  uint32_t magic = 0, kind = 0;
  uint64_t length = 0;
  std::memcpy(&magic, buffer_.data() + start_, 4);
  std::memcpy(&kind, buffer_.data() + start_ + 4, 4);
  std::memcpy(&length, buffer_.data() + start_ + 8, 8);
  if (magic != kMagic || length > kMaxFramePayload) {
    error_ = absl::StrCat("the worker socket carried a bad frame header (magic ", magic,
                          ", length ", length, "): the stream is broken");
    return Status::kBroken;
  }
  start_ += kFrameHeaderBytes;
  frame->kind = static_cast<FrameKind>(kind);
  const size_t buffered = end_ - start_;
  if (buffered >= length) {
    frame->payload.assign(buffer_.data() + start_, length);
    start_ += length;
    return Status::kFrame;
  }
  // The rest of the payload goes straight into its string.
  frame->payload.resize(length);
  std::memcpy(frame->payload.data(), buffer_.data() + start_, buffered);
  start_ = end_ = 0;
  size_t have = buffered;
  while (have < length) {
    const ssize_t got = Fill(frame->payload.data() + have, length - have);
    if (got <= 0) {
      if (got == 0) error_ = "the worker socket closed in the middle of a frame";
      return Status::kBroken;
    }
    have += static_cast<size_t>(got);
  }
  return Status::kFrame;
}

std::vector<int> FrameReader::TakeFds() {
  std::vector<int> fds;
  fds.swap(fds_);
  return fds;
}

}  // namespace concurry::process_internal
