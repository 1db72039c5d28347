// Round trip of one file through the object store (PutFile, then GetToFile) with peak RSS:
//   vault_roundtrip DIR IN OUT
// DIR is a fresh vault directory (a random master key is used). Prints sizes, rates, SHA-256
// and ru_maxrss, so bounded memory for a file far larger than RAM budgets can be shown.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>

#include "common/rng.h"
#include "vault/object_store.h"

using namespace warden::vault;

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: vault_roundtrip DIR IN OUT\n");
    return 2;
  }
  std::string dir = argv[1];
  auto master = warden::common::MasterKey::FromBytes(warden::common::SecureRng::Get().Bytes(32));
  KeyringOptions ko;
  ko.dir = dir + "/keys";
  auto keyring = Keyring::Open(*master, ko);
  if (!keyring.ok()) return 1;
  ObjectStoreOptions so;
  so.root = dir;
  auto store = ObjectStore::Open(**keyring, so);
  if (!store.ok()) return 1;
  auto t0 = std::chrono::steady_clock::now();
  auto put = (*store)->PutFile("bench", "roundtrip/file.bin", {{"kind", "bench"}}, argv[2]);
  if (!put.ok()) {
    std::fprintf(stderr, "put: %s\n", std::string(put.status().message()).c_str());
    return 1;
  }
  auto t1 = std::chrono::steady_clock::now();
  auto get = (*store)->GetToFile("bench", "roundtrip/file.bin", 0, argv[3]);
  if (!get.ok()) {
    std::fprintf(stderr, "get: %s\n", std::string(get.status().message()).c_str());
    return 1;
  }
  auto t2 = std::chrono::steady_clock::now();
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  double put_s = std::chrono::duration<double>(t1 - t0).count();
  double get_s = std::chrono::duration<double>(t2 - t1).count();
  double mib = static_cast<double>(put->size) / (1 << 20);
  std::printf(
      "size_bytes=%llu put_s=%.2f put_MiB_s=%.0f get_s=%.2f get_MiB_s=%.0f sha256=%s "
      "peak_rss_kib=%ld\n",
      static_cast<unsigned long long>(put->size), put_s, mib / put_s, get_s, mib / get_s,
      get->sha256_hex.c_str(), ru.ru_maxrss);
  return 0;
}
