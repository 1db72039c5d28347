// Internal to vault: a two-thread pipeline for file transfers (ObjectStore::PutFile/GetToFile).
//
// PieceRing hands filled pieces of bytes from the calling thread (the producer) to one helper
// thread (the consumer) that takes them in order, so that two cores share a transfer: on upload
// the caller reads and seals while the helper computes the plaintext SHA-256; on download the
// caller reads and opens chunks while the helper writes the plaintext (README.md "Two-core file
// transfers"). A fixed ring of `pieces` buffers of `piece_size` bytes bounds memory; the producer
// waits while every piece is in flight.
//
// Sharing rule: after Publish the producer may still read the piece it published (both sides only
// read it then); it writes a piece only between Acquire and Publish, and Acquire hands out a piece
// only after the consumer returned from its previous use (a mutex orders the two).
//
// Errors: the consumer's first error stops it; the producer sees that error at its next
// Acquire, Publish or Finish. A producer that fails simply destroys the ring: the destructor
// stops the helper without consuming the remaining pieces and joins it. Not thread-safe itself:
// one producer thread.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vault/format.h"

namespace warden::vault::internal {

class PieceRing {
 public:
  using Consumer = std::function<absl::Status(std::string_view)>;

  // Starts the helper thread. `pieces` >= 2, `piece_size` >= 1.
  PieceRing(size_t piece_size, size_t pieces, Consumer consume);
  ~PieceRing();
  PieceRing(const PieceRing&) = delete;
  PieceRing& operator=(const PieceRing&) = delete;

  // The next free piece (capacity piece_size()), waiting while all pieces are in flight. Returns
  // the consumer's error once it failed. Call Publish before the next Acquire.
  absl::StatusOr<char*> Acquire();
  // Hands the piece from the last Acquire, holding its first `len` bytes, to the consumer.
  absl::Status Publish(size_t len);
  // Waits until the consumer has taken every published piece and stops the helper; returns the
  // consumer's first error, else OK. No Acquire/Publish afterwards.
  absl::Status Finish();

  size_t piece_size() const { return piece_size_; }
  // Most pieces published and not yet consumed at any moment (for tests of bounded memory).
  size_t max_in_flight() const;

 private:
  void Run();

  const size_t piece_size_;
  std::vector<std::string> bufs_;
  std::vector<size_t> lens_;
  Consumer consume_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t published_ = 0;  // pieces handed to the consumer
  uint64_t consumed_ = 0;   // pieces the consumer returned from
  bool acquired_ = false;   // the producer holds piece published_ % n
  bool closing_ = false;    // Finish: consume the rest, then stop
  bool abandon_ = false;    // destructor without Finish: stop now
  size_t max_in_flight_ = 0;
  absl::Status error_;
  std::thread helper_;
};

// Download of a whole object into a file on two threads, for versions whose recorded size and
// SHA-256 are vouched for by their content digest tag (so no plaintext hash is needed). STREAM
// chunks are independent once their index and final flag are known, and both follow from the
// recorded `size` (as in ObjectStore::ReadChunks), so the calling thread opens the even and a
// helper the odd blocks of `piece_size` bytes' worth of chunks, each with its own decryptor,
// reading with pread from `in_fd` (the content file) and writing the verified plaintext with
// pwrite at its offset in `out_fd`. Before any chunk is opened: the header must name `expect`
// and `chunk_size`, `tag` must verify for (`size`, `sha256`) (raw bytes), and the content file
// must be exactly as long as `size` implies (a truncated file, or one with anything appended,
// fails). A chunk that does not authenticate or a read or write error on either thread stops
// both (DataLoss / Unavailable); `out_fd` may then hold partial plaintext that the caller must
// discard.
absl::Status OpenToFileOnTwoThreads(std::string_view data_key,
                                    const ObjectDecryptor::Expect& expect, int in_fd, uint64_t size,
                                    std::string_view sha256, std::string_view tag,
                                    uint32_t chunk_size, size_t piece_size, int out_fd);

}  // namespace warden::vault::internal
