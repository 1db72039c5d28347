#include "vault/pipeline.h"

#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

#include "common/status.h"
#include "common/strings.h"

namespace warden::vault::internal {

PieceRing::PieceRing(size_t piece_size, size_t pieces, Consumer consume)
    : piece_size_(std::max<size_t>(piece_size, 1)),
      bufs_(std::max<size_t>(pieces, 2)),
      lens_(bufs_.size(), 0),
      consume_(std::move(consume)) {
  for (auto& b : bufs_) b.assign(piece_size_, '\0');
  helper_ = std::thread([this] { Run(); });
}

PieceRing::~PieceRing() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closing_) abandon_ = true;
    closing_ = true;
  }
  cv_.notify_all();
  if (helper_.joinable()) helper_.join();
  // The pieces held plaintext (file content before sealing, or opened chunks).
  for (auto& b : bufs_) OPENSSL_cleanse(b.data(), b.size());
}

void PieceRing::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return abandon_ || consumed_ < published_ || closing_; });
    if (abandon_ || !error_.ok()) break;
    if (consumed_ == published_) break;  // closing and nothing left
    size_t slot = static_cast<size_t>(consumed_ % bufs_.size());
    std::string_view piece(bufs_[slot].data(), lens_[slot]);
    lock.unlock();
    absl::Status s = consume_(piece);
    lock.lock();
    ++consumed_;
    if (!s.ok()) error_ = std::move(s);
    cv_.notify_all();
  }
  // Wakes a producer waiting for a free piece after an error or abandonment.
  consumed_ = published_;
  cv_.notify_all();
}

absl::StatusOr<char*> PieceRing::Acquire() {
  std::unique_lock<std::mutex> lock(mu_);
  if (acquired_) return absl::InternalError("PieceRing::Acquire twice without Publish");
  if (closing_) return absl::InternalError("PieceRing::Acquire after Finish");
  cv_.wait(lock, [this] { return !error_.ok() || published_ - consumed_ < bufs_.size(); });
  if (!error_.ok()) return error_;
  acquired_ = true;
  return bufs_[static_cast<size_t>(published_ % bufs_.size())].data();
}

absl::Status PieceRing::Publish(size_t len) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!acquired_) return absl::InternalError("PieceRing::Publish without Acquire");
    acquired_ = false;
    if (!error_.ok()) return error_;
    lens_[static_cast<size_t>(published_ % bufs_.size())] = std::min(len, piece_size_);
    ++published_;
    max_in_flight_ = std::max<size_t>(max_in_flight_, static_cast<size_t>(published_ - consumed_));
  }
  cv_.notify_all();
  return absl::OkStatus();
}

absl::Status PieceRing::Finish() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    acquired_ = false;
    closing_ = true;
  }
  cv_.notify_all();
  if (helper_.joinable()) helper_.join();
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

size_t PieceRing::max_in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return max_in_flight_;
}

namespace {

absl::Status PwriteAll(int fd, const char* data, size_t len, uint64_t off) {
  while (len > 0) {
    ssize_t n = ::pwrite(fd, data, len, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::UnavailableError(common::StrCat("write failed: ", std::strerror(errno)));
    }
    data += n;
    len -= static_cast<size_t>(n);
    off += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status OpenToFileOnTwoThreads(std::string_view data_key,
                                    const ObjectDecryptor::Expect& expect, int in_fd, uint64_t size,
                                    std::string_view sha256, std::string_view tag,
                                    uint32_t chunk_size, size_t piece_size, int out_fd) {
  using common::StrCat;
  if (chunk_size < kMinChunkSize || chunk_size > kMaxChunkSize) {
    return absl::DataLossError(StrCat("object ", expect.object_id, " has a bad chunk size"));
  }
  const uint64_t cs = chunk_size;
  const uint64_t ct = cs + kChunkTagSize;
  const uint64_t total = size == 0 ? 1 : (size + cs - 1) / cs;  // chunks; the last is final
  if (total > kMaxChunks) return absl::DataLossError("recorded size beyond 2^32 chunks");
  std::string header(kMaxHeaderSize, '\0');
  ssize_t got = ::pread(in_fd, header.data(), header.size(), 0);
  size_t header_len = 0;
  auto h = ParseHeader(std::string_view(header.data(), got > 0 ? static_cast<size_t>(got) : 0),
                       &header_len);
  if (!h.ok()) {
    return absl::IsUnavailable(h.status())
               ? absl::DataLossError(StrCat("object ", expect.object_id, " has a truncated header"))
               : h.status();
  }
  if (h->chunk_size != chunk_size) {
    return absl::DataLossError(
        StrCat("object ", expect.object_id, ": the header's chunk size differs from the metadata"));
  }
  header.resize(header_len);
  // The whole layout follows from the recorded size: anything cut off or appended is refused
  // here, before any plaintext is written (a changed size is caught by the final flag, the last
  // chunk's tag and the digest tag).
  const uint64_t last_len = size - (total - 1) * cs;
  const uint64_t want = header_len + (total - 1) * ct + last_len + kChunkTagSize;
  struct stat st {};
  if (::fstat(in_fd, &st) != 0) {
    return absl::UnavailableError(StrCat("cannot stat content: ", std::strerror(errno)));
  }
  if (static_cast<uint64_t>(st.st_size) != want) {
    return absl::DataLossError(StrCat("object ", expect.object_id, " content is ", st.st_size,
                                      " bytes, its recorded size needs ", want,
                                      ": truncated or appended to"));
  }
  const uint64_t block = std::max<uint64_t>(1, piece_size / cs);  // chunks per block
  std::unique_ptr<ObjectDecryptor> decs[2];
  ByteSink sinks[2];  // each thread's: appends to its own output buffer
  for (int i = 0; i < 2; ++i) {
    WARDEN_ASSIGN_OR_RETURN(
        decs[i], ObjectDecryptor::Create(
                     data_key, expect, [&sinks, i](std::string_view p) { return sinks[i](p); },
                     /*expect_final=*/true, /*hash_plaintext=*/false));
    WARDEN_RETURN_IF_ERROR(decs[i]->Update(header));  // checks tenant, object id and version
  }
  WARDEN_RETURN_IF_ERROR(decs[0]->VerifyDigestTag(size, sha256, tag));
  std::atomic<bool> stop{false};
  absl::Status status[2];
  auto work = [&](int parity) {
    ObjectDecryptor& dec = *decs[parity];
    std::string in(static_cast<size_t>(block * ct), '\0');
    // Each verified chunk goes straight from the decryptor's buffer to its place in the file
    // (no copy into a block buffer: the chunk is still in this core's cache).
    uint64_t out_off = 0;
    sinks[parity] = [&](std::string_view p) {
      absl::Status w = PwriteAll(out_fd, p.data(), p.size(), out_off);
      out_off += p.size();
      return w;
    };
    absl::Status s;
    for (uint64_t first = static_cast<uint64_t>(parity) * block; s.ok() && first < total;
         first += 2 * block) {
      if (stop.load(std::memory_order_relaxed)) break;
      const uint64_t n = std::min(block, total - first);
      const bool has_final = first + n == total;
      const size_t len =
          static_cast<size_t>((n - 1) * ct + (has_final ? last_len + kChunkTagSize : ct));
      ssize_t r = ::pread(in_fd, in.data(), len, static_cast<off_t>(header_len + first * ct));
      if (r != static_cast<ssize_t>(len)) {
        s = r < 0 ? absl::UnavailableError(StrCat("cannot read content: ", std::strerror(errno)))
                  : absl::DataLossError(
                        StrCat("object ", expect.object_id, " is truncated at chunk ", first));
        break;
      }
      out_off = first * cs;
      for (uint64_t j = 0; s.ok() && j < n; ++j) {
        const bool final = first + j + 1 == total;
        std::string_view sealed(in.data() + j * ct, final ? last_len + kChunkTagSize : ct);
        s = dec.OpenChunkAt(first + j, final, sealed);
      }
    }
    if (!s.ok()) stop.store(true, std::memory_order_relaxed);
    status[parity] = std::move(s);
  };
  std::thread helper(work, 1);
  work(0);
  helper.join();
  for (auto& s : status) WARDEN_RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

}  // namespace warden::vault::internal
