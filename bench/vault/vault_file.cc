// File-to-file encryption with the vault's chunked format, for the comparison with `age`:
//   vault_file encrypt KEYFILE IN OUT     (KEYFILE: a master key file, mode 0600)
//   vault_file decrypt KEYFILE IN OUT
//   (--no-sha256 as the first argument skips the plaintext SHA-256: the format alone, as age,
//   which computes no plaintext hash either)
// The data key is derived from the master key here (a real object's comes from the keyring);
// the content path (read, chunk, seal, SHA-256, write) is exactly the object store's.
#include <fcntl.h>
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

int Fail(const std::string& msg) {
  std::fprintf(stderr, "vault_file: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  bool hash = true;
  if (argc > 1 && std::string(argv[1]) == "--no-sha256") {
    hash = false;
    ++argv;
    --argc;
  }
  if (argc != 5) return Fail("usage: vault_file encrypt|decrypt KEYFILE IN OUT");
  std::string mode = argv[1];
  auto master = warden::common::MasterKey::FromFile(argv[2]);
  if (!master.ok()) return Fail(std::string(master.status().message()));
  auto dek = master->DeriveSecret("vault_file data key");
  int in = ::open(argv[3], O_RDONLY | O_CLOEXEC);
  if (in < 0) return Fail(std::string("cannot open ") + argv[3]);
  int out = ::open(argv[4], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0) return Fail(std::string("cannot create ") + argv[4]);
  std::string buf(1 << 20, '\0');
  auto sink = [out](std::string_view b) { return WriteAll(out, b); };
  absl::Status st;
  std::string sha;
  if (mode == "encrypt") {
    ObjectHeader h{kDefaultChunkSize, std::string(32, '\0'), "local", "file", 1};
    h.salt = warden::common::SecureRng::Get().Bytes(32);
    auto e = ObjectEncryptor::Create(*dek, h, sink, hash);
    if (!e.ok()) return Fail(std::string(e.status().message()));
    while (st.ok()) {
      ssize_t n = ::read(in, buf.data(), buf.size());
      if (n <= 0) break;
      st = (*e)->Update(std::string_view(buf.data(), static_cast<size_t>(n)));
    }
    if (st.ok()) st = (*e)->Finish();
    if (st.ok()) sha = (*e)->sha256();
  } else if (mode == "decrypt") {
    auto d = ObjectDecryptor::Create(*dek, {"local", "file", 1}, sink, true, hash);
    if (!d.ok()) return Fail(std::string(d.status().message()));
    while (st.ok()) {
      ssize_t n = ::read(in, buf.data(), buf.size());
      if (n <= 0) break;
      st = (*d)->Update(std::string_view(buf.data(), static_cast<size_t>(n)));
    }
    if (st.ok()) st = (*d)->Finish();
    if (st.ok()) sha = (*d)->sha256();
  } else {
    return Fail("mode must be encrypt or decrypt");
  }
  ::close(in);
  if (::close(out) != 0 && st.ok()) st = absl::UnavailableError("close failed");
  if (!st.ok()) {
    ::unlink(argv[4]);
    return Fail(std::string(st.message()));
  }
  if (hash) std::fprintf(stderr, "sha256 %s\n", warden::common::HexEncode(sha).c_str());
  return 0;
}
