// File-to-file encryption with the vault's chunked format, for the comparison with `age`:
//   vault_file [--no-sha256] [--io=read] encrypt KEYFILE IN OUT   (KEYFILE: master key, 0600)
//   vault_file [--no-sha256] [--io=read] decrypt KEYFILE IN OUT
// --no-sha256 skips the plaintext SHA-256 (the format alone, as age, which computes no plaintext
// hash either). By default the input is memory-mapped and fed in place in 1 MiB pieces (no copy
// into a buffer), and sealed or opened chunks are coalesced into 1 MiB writes; --io=read is the
// earlier I/O for comparison: 1 MiB read(2)s into a buffer and one write(2) per 64 KiB chunk.
// The I/O is this tool's own (the object store's PutFile/GetToFile still read(2) 1 MiB and write
// per chunk; the server's uploads arrive over HTTP, not from a file). The data key is derived
// from the master key here (a real object's comes from the keyring); the content path (chunk,
// seal, SHA-256) is exactly the object store's ObjectEncryptor/ObjectDecryptor.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/encoding.h"
#include "vault/crypto.h"
#include "vault/format.h"
#include "vault/keys.h"

namespace {

using namespace warden::vault;

absl::Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError(std::strerror(errno));
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

// Coalesces small pieces into writes of `cap` bytes (fewer syscalls; one copy either way).
class BatchedWriter {
 public:
  BatchedWriter(int fd, size_t cap) : fd_(fd) { buf_.reserve(cap); }
  absl::Status Add(std::string_view b) {
    if (buf_.size() + b.size() > buf_.capacity()) {
      if (absl::Status s = Flush(); !s.ok()) return s;
      if (b.size() >= buf_.capacity()) return WriteAll(fd_, b);
    }
    buf_.append(b);
    return absl::OkStatus();
  }
  absl::Status Flush() {
    absl::Status s = WriteAll(fd_, buf_);
    buf_.clear();
    return s;
  }

 private:
  int fd_;
  std::string buf_;
};

int Fail(const std::string& msg) {
  std::fprintf(stderr, "vault_file: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  bool hash = true;
  bool mapped = true;
  while (argc > 1 && std::strncmp(argv[1], "--", 2) == 0) {
    std::string flag = argv[1];
    if (flag == "--no-sha256") {
      hash = false;
    } else if (flag == "--io=read") {
      mapped = false;
    } else if (flag != "--io=mmap") {
      return Fail("unknown flag " + flag);
    }
    ++argv;
    --argc;
  }
  if (argc != 5)
    return Fail("usage: vault_file [--no-sha256] [--io=read|mmap] encrypt|decrypt KEYFILE IN OUT");
  std::string mode = argv[1];
  auto master = warden::common::MasterKey::FromFile(argv[2]);
  if (!master.ok()) return Fail(std::string(master.status().message()));
  auto dek = master->DeriveSecret("vault_file data key");
  int in = ::open(argv[3], O_RDONLY | O_CLOEXEC);
  if (in < 0) return Fail(std::string("cannot open ") + argv[3]);
  int out = ::open(argv[4], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0) return Fail(std::string("cannot create ") + argv[4]);
  struct stat st_in {};
  if (::fstat(in, &st_in) != 0) return Fail("cannot stat input");
  const size_t in_size = static_cast<size_t>(st_in.st_size);

  BatchedWriter batch(out, 1 << 20);
  ByteSink sink = mapped ? ByteSink([&batch](std::string_view b) { return batch.Add(b); })
                         : ByteSink([out](std::string_view b) { return WriteAll(out, b); });
  // Feeds the input to `update` in 1 MiB pieces (so the hash and the cipher read each piece while
  // it is in cache), from the mapping or through read(2).
  std::string buf;
  auto feed = [&](auto&& update) -> absl::Status {
    if (mapped) {
      if (in_size == 0) return absl::OkStatus();
      void* m = ::mmap(nullptr, in_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, in, 0);
      if (m == MAP_FAILED) return absl::UnavailableError(std::strerror(errno));
      ::madvise(m, in_size, MADV_SEQUENTIAL);
      std::string_view all(static_cast<const char*>(m), in_size);
      absl::Status s;
      for (size_t off = 0; s.ok() && off < in_size; off += 1 << 20)
        s = update(all.substr(off, 1 << 20));
      ::munmap(m, in_size);
      return s;
    }
    buf.assign(1 << 20, '\0');
    absl::Status s;
    while (s.ok()) {
      ssize_t n = ::read(in, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return absl::UnavailableError(std::strerror(errno));
      if (n == 0) break;
      s = update(std::string_view(buf.data(), static_cast<size_t>(n)));
    }
    return s;
  };

  absl::Status st;
  std::string sha;
  if (mode == "encrypt") {
    ObjectHeader h{kDefaultChunkSize, std::string(32, '\0'), "local", "file", 1};
    h.salt = warden::common::SecureRng::Get().Bytes(32);
    auto e = ObjectEncryptor::Create(*dek, h, sink, hash);
    if (!e.ok()) return Fail(std::string(e.status().message()));
    st = feed([&](std::string_view p) { return (*e)->Update(p); });
    if (st.ok()) st = (*e)->Finish();
    if (st.ok()) sha = (*e)->sha256();
  } else if (mode == "decrypt") {
    auto d = ObjectDecryptor::Create(*dek, {"local", "file", 1}, sink, true, hash);
    if (!d.ok()) return Fail(std::string(d.status().message()));
    st = feed([&](std::string_view p) { return (*d)->Update(p); });
    if (st.ok()) st = (*d)->Finish();
    if (st.ok()) sha = (*d)->sha256();
  } else {
    return Fail("mode must be encrypt or decrypt");
  }
  if (st.ok() && mapped) st = batch.Flush();
  ::close(in);
  if (::close(out) != 0 && st.ok()) st = absl::UnavailableError("close failed");
  if (!st.ok()) {
    ::unlink(argv[4]);
    return Fail(std::string(st.message()));
  }
  if (hash) std::fprintf(stderr, "sha256 %s\n", warden::common::HexEncode(sha).c_str());
  return 0;
}
