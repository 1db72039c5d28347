// File-to-file encryption through the vault's object store, for the comparison with `age`:
//   vault_file [--threads=1] [--rehash] encrypt KEYFILE IN VAULT_DIR   (ObjectStore::PutFile)
//   vault_file [--threads=1] [--rehash] decrypt KEYFILE VAULT_DIR OUT  (ObjectStore::GetToFile)
// KEYFILE is a master key file (0600, 32 raw bytes or 64 hex digits); VAULT_DIR a vault directory
// (created by encrypt; the keyring lives in VAULT_DIR/keys). The object is tenant "bench", name
// "file", latest version. This is the product's code path, unchanged: keyring, data key wrapping,
// chunked AES-256-GCM, plaintext SHA-256, content digest tag, fsync and atomic publication (on
// encrypt), temp file + verification + rename (on decrypt).
//   --threads=1  ObjectStoreOptions::pipeline = false (everything on the calling thread)
//   --rehash     ObjectStoreOptions::rehash_on_read = true (decrypt re-hashes the plaintext)
//   --pieces=N, --piece-kib=K   the pipeline's ring (default 4 pieces of 1024 KiB)
#include <cstdio>
#include <cstring>
#include <string>

#include "common/master_key.h"
#include "vault/keys.h"
#include "vault/object_store.h"

namespace {

using namespace warden::vault;

int Fail(const std::string& msg) {
  std::fprintf(stderr, "vault_file: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  ObjectStoreOptions so;
  while (argc > 1 && std::strncmp(argv[1], "--", 2) == 0) {
    std::string flag = argv[1];
    if (flag == "--threads=1") {
      so.pipeline = false;
    } else if (flag == "--threads=2") {
      so.pipeline = true;
    } else if (flag == "--rehash") {
      so.rehash_on_read = true;
    } else if (flag.rfind("--pieces=", 0) == 0) {
      so.pipeline_pieces = std::stoul(flag.substr(9));
    } else if (flag.rfind("--piece-kib=", 0) == 0) {
      so.pipeline_piece_size = std::stoul(flag.substr(12)) * 1024;
    } else {
      return Fail("unknown flag " + flag);
    }
    ++argv;
    --argc;
  }
  if (argc != 5) {
    return Fail(
        "usage: vault_file [--threads=1|2] [--rehash] [--pieces=N] [--piece-kib=K] encrypt KEYFILE "
        "IN VAULT_DIR | "
        "decrypt KEYFILE VAULT_DIR OUT");
  }
  const std::string mode = argv[1];
  if (mode != "encrypt" && mode != "decrypt") return Fail("mode must be encrypt or decrypt");
  const std::string dir = mode == "encrypt" ? argv[4] : argv[3];
  auto master = warden::common::MasterKey::FromFile(argv[2]);
  if (!master.ok()) return Fail(std::string(master.status().message()));
  KeyringOptions ko;
  ko.dir = dir + "/keys";
  auto keyring = Keyring::Open(*master, ko);
  if (!keyring.ok()) return Fail(std::string(keyring.status().message()));
  so.root = dir;
  auto store = ObjectStore::Open(**keyring, so);
  if (!store.ok()) return Fail(std::string(store.status().message()));
  auto info = mode == "encrypt" ? (*store)->PutFile("bench", "file", {}, argv[3])
                                : (*store)->GetToFile("bench", "file", 0, argv[4]);
  if (!info.ok()) return Fail(std::string(info.status().message()));
  std::fprintf(stderr, "sha256 %s size %llu\n", info->sha256_hex.c_str(),
               static_cast<unsigned long long>(info->size));
  return 0;
}
