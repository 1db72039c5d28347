// Rng: randomness for secrets and ids. SecureRng draws from OpenSSL's CSPRNG and is the only one
// used outside tests; SeededRng is deterministic for tests. Both are thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <random>
#include <string>

namespace warden::common {

class Rng {
 public:
  virtual ~Rng() = default;
  // Fills `out` with `n` random bytes.
  virtual std::string Bytes(size_t n) = 0;
};

class SecureRng final : public Rng {
 public:
  std::string Bytes(size_t n) override;
  static SecureRng& Get();
};

class SeededRng final : public Rng {
 public:
  explicit SeededRng(uint64_t seed) : gen_(seed) {}
  std::string Bytes(size_t n) override;

 private:
  std::mutex mu_;
  std::mt19937_64 gen_;
};

}  // namespace warden::common
