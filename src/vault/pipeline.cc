#include "vault/pipeline.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <utility>

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

}  // namespace warden::vault::internal
