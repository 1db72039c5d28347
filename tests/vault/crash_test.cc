// Crash tests: a child process writes or rotates and is killed with SIGKILL at chosen points;
// the parent then reopens the vault (running recovery) and checks that no object is half-visible
// and that every object committed before the crash still decrypts (no data key was lost).
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <vector>

#include "common/encoding.h"
#include "gtest/gtest.h"
#include "test_util.h"
#include "vault/object_store.h"

namespace warden::vault {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::Pattern;
using testing::ReadAll;

struct Vault {
  std::unique_ptr<Keyring> keyring;
  std::unique_ptr<ObjectStore> store;
};

Vault OpenVault(const std::string& dir, std::function<void(std::string_view)> hook = nullptr) {
  Vault v;
  auto mk = common::MasterKey::FromBytes(std::string(32, 'M'));
  KeyringOptions ko;
  ko.dir = dir + "/keys";
  v.keyring = std::move(*Keyring::Open(*mk, ko));
  ObjectStoreOptions so;
  so.root = dir;
  so.chunk_size = 64 * 1024;
  so.hook = std::move(hook);
  auto s = ObjectStore::Open(*v.keyring, so);
  if (!s.ok()) {
    ADD_FAILURE() << s.status();
    return v;
  }
  v.store = std::move(*s);
  return v;
}

absl::Status PutString(ObjectStore& s, std::string_view tenant, std::string_view name,
                       const std::string& data) {
  size_t pos = 0;
  return s
      .Put(tenant, name, {},
           [&](char* buf, size_t cap) -> absl::StatusOr<size_t> {
             size_t n = std::min(cap, data.size() - pos);
             std::memcpy(buf, data.data() + pos, n);
             pos += n;
             return n;
           })
      .status();
}

// Runs `work` in a child that signals through a pipe when its hook saw `point` for the
// `count`-th time, then (if `stop`) waits to be killed. The parent kills it with SIGKILL as soon
// as the signal arrives, or after `max_ms` when the point was never reached.
void RunAndKill(const std::string& dir, const std::string& point, int count, bool stop,
                const std::function<void(Vault&)>& work, int max_ms = 20000) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    int seen = 0;
    Vault v = OpenVault(dir, [&](std::string_view p) {
      if (p != point || ++seen != count) return;
      char c = 'x';
      (void)!::write(fds[1], &c, 1);
      if (stop) ::pause();
    });
    if (v.store) work(v);
    ::_exit(0);
  }
  ::close(fds[1]);
  struct pollfd p {
    fds[0], POLLIN, 0
  };
  ::poll(&p, 1, max_ms);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(fds[0]);
}

// The latest version of acme's `name`, read whole ("" with a test failure when it does not read).
std::string ReadWhole(Vault& v, const std::string& name) {
  std::string got;
  auto r = v.store->Get("acme", name, 0, [&](std::string_view b) {
    got.append(b);
    return absl::OkStatus();
  });
  EXPECT_TRUE(r.ok()) << name << ": " << r.status();
  return got;
}

void ExpectNoHalfVisibleObjects(const std::string& dir) {
  // After recovery: every content file is named by metadata; no temporary files anywhere.
  for (const auto& f : fs::recursive_directory_iterator(dir)) {
    std::string fn = f.path().filename().string();
    EXPECT_EQ(fn.find(".tmp."), std::string::npos) << f.path();
    if (fn.size() > 4 && fn.substr(fn.size() - 4) == ".gwv") {
      std::string base = fn.substr(0, fn.find('.'));
      EXPECT_TRUE(fs::exists(f.path().parent_path() / (base + ".meta.json"))) << f.path();
    }
  }
}

TEST(VaultCrashTest, KillDuringLargeWriteLeavesNothingHalfVisible) {
  const std::string big = Pattern(24 << 20, 3);
  struct Case {
    std::string point;
    int count;
    bool stop;
  };
  for (const Case& c :
       {Case{"chunk", 3, false}, Case{"chunk", 15, false}, Case{"publish", 1, true}}) {
    SCOPED_TRACE(c.point + " " + std::to_string(c.count));
    TempDir tmp;
    std::string dir = tmp.path() + "/vault";
    {
      Vault v = OpenVault(dir);
      ASSERT_TRUE(PutString(*v.store, "acme", "before", "committed before the crash").ok());
    }
    RunAndKill(dir, c.point, c.count, c.stop,
               [&](Vault& v) { (void)PutString(*v.store, "acme", "big", big); });
    Vault v = OpenVault(dir);
    ExpectNoHalfVisibleObjects(dir);
    auto list = v.store->List("acme", "");
    ASSERT_TRUE(list.ok());
    for (const auto& info : *list) {
      std::string got;
      auto r = v.store->Get("acme", info.name, 0, [&](std::string_view b) {
        got.append(b);
        return absl::OkStatus();
      });
      ASSERT_TRUE(r.ok()) << info.name << ": " << r.status();
      if (info.name == "big") {
        EXPECT_EQ(got, big) << "a visible object is complete";
      }
    }
    ASSERT_GE(list->size(), 1u);
    EXPECT_TRUE(v.store->Stat("acme", "before").ok());
    EXPECT_EQ(v.store->Stat("acme", "big").status().code(), absl::StatusCode::kNotFound)
        << "killed before the metadata rename: not visible";
    // The vault stays usable: the same name can be written and read.
    ASSERT_TRUE(PutString(*v.store, "acme", "big", "again").ok());
  }
}

TEST(VaultCrashTest, KillDuringRotationLosesNoDataKey) {
  struct Case {
    std::string point;
    int count;
    bool reencrypt;
  };
  for (const Case& c :
       {Case{"rewrap", 1, false}, Case{"rewrap", 7, false}, Case{"reencrypt", 3, true}}) {
    SCOPED_TRACE(c.point + " " + std::to_string(c.count));
    TempDir tmp;
    std::string dir = tmp.path() + "/vault";
    const int kObjects = 12;
    {
      Vault v = OpenVault(dir);
      for (int i = 0; i < kObjects; ++i) {
        ASSERT_TRUE(PutString(*v.store, "acme", "o" + std::to_string(i), Pattern(70000, i)).ok());
      }
    }
    RunAndKill(dir, c.point, c.count, /*stop=*/true,
               [&](Vault& v) { (void)v.store->RotateTenantKey("acme", c.reencrypt); });
    Vault v = OpenVault(dir);
    ExpectNoHalfVisibleObjects(dir);
    int at_new = 0;
    auto check_all = [&]() {
      at_new = 0;
      for (int i = 0; i < kObjects; ++i) {
        std::string got;
        auto r = v.store->Get("acme", "o" + std::to_string(i), 0, [&](std::string_view b) {
          got.append(b);
          return absl::OkStatus();
        });
        ASSERT_TRUE(r.ok()) << i << ": " << r.status();
        EXPECT_EQ(got, Pattern(70000, i));
        if (r->kek_version == 2) ++at_new;
      }
    };
    check_all();
    EXPECT_GT(at_new, 0);
    EXPECT_LT(at_new, kObjects) << "the kill should land mid-rotation";
    // Rerunning the rotation finishes the job; then old versions can be retired.
    auto rep = v.store->RotateTenantKey("acme", false);
    ASSERT_TRUE(rep.ok()) << rep.status();
    ASSERT_TRUE(v.keyring->SetMinVersion("acme", rep->new_version, true).ok());
    check_all();
  }
}

// A resumed upload is re-keyed (its verified prefix re-encrypted under a new data key into a new
// part file) before it takes more data. A kill while that runs, or between the state's rewrite
// and the old file's removal, must leave an upload that resumes and commits the right bytes.
TEST(VaultCrashTest, KillDuringAResumedUploadsRekeyLosesNothing) {
  const std::string data = Pattern(6 * 64 * 1024 + 10, 5);
  for (const char* where : {"before the state names the new file", "after it"}) {
    SCOPED_TRACE(where);
    TempDir tmp;
    std::string dir = tmp.path() + "/vault";
    std::string upload_id;
    {
      Vault v = OpenVault(dir);
      auto up = v.store->BeginUpload("acme", "resumed", {});
      ASSERT_TRUE(up.ok()) << up.status();
      upload_id = up->upload_id;
      auto s = v.store->AppendUpload("acme", upload_id, 0, std::string_view(data).substr(0, 5 * 64 * 1024 + 10));
      ASSERT_TRUE(s.ok()) << s.status();
      ASSERT_EQ(s->durable, 5u * 64 * 1024);
    }
    const std::string udir = dir + "/tenants/acme/uploads/" + upload_id;
    auto part_files = [&]() {
      std::vector<std::string> parts;
      for (const auto& f : fs::directory_iterator(udir)) {
        const std::string fn = f.path().filename().string();
        if (fn.size() > 5 && fn.substr(fn.size() - 5) == ".part") parts.push_back(fn);
      }
      return parts;
    };
    if (std::string(where) == "after it") {
      // The crash after state.json names the new file but before the old one is removed: the
      // old file is left next to the current one.
      {
        Vault v = OpenVault(dir);
        ASSERT_TRUE(v.store->UploadStatus("acme", upload_id).ok());
      }
      ASSERT_EQ(part_files(), std::vector<std::string>{"data.1.part"});
      fs::copy_file(udir + "/data.1.part", udir + "/data.part");
    } else {
      RunAndKill(dir, "rekey", 1, /*stop=*/true,
                 [&](Vault& v) { (void)v.store->UploadStatus("acme", upload_id); });
      ASSERT_EQ(part_files().size(), 2u) << "the kill landed with both files on disk";
    }
    Vault v = OpenVault(dir);
    EXPECT_EQ(part_files().size(), 1u) << "recovery removed the part file the state does not name";
    auto st = v.store->UploadStatus("acme", upload_id);
    ASSERT_TRUE(st.ok()) << st.status();
    EXPECT_EQ(st->received, 5u * 64 * 1024) << "every verified chunk survived the re-keys";
    ASSERT_TRUE(v.store->AppendUpload("acme", upload_id, st->received,
                                      std::string_view(data).substr(st->received)).ok());
    auto info = v.store->CommitUpload("acme", upload_id, common::Sha256Hex(data));
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(ReadWhole(v, "resumed"), data);
    ExpectNoHalfVisibleObjects(dir);
  }
}

// A kill during the commit, after the final chunk was sealed and synced and before the version
// was published: nothing is visible, and the retried upload has every byte (the final chunk
// opens as the final one), so the client commits at once with nothing to resend.
TEST(VaultCrashTest, KillDuringCommitKeepsEveryByteForTheRetry) {
  for (size_t size : {size_t{3} * 64 * 1024 + 100, size_t{3} * 64 * 1024}) {
    for (bool reloaded_before_commit : {false, true}) {
      SCOPED_TRACE(std::to_string(size) + (reloaded_before_commit ? " re-keyed" : " not re-keyed"));
      const std::string data = Pattern(size, 9);
      TempDir tmp;
      std::string dir = tmp.path() + "/vault";
      std::string upload_id;
      auto begin_and_append = [&](Vault& v) {
        auto up = v.store->BeginUpload("acme", "committed", {});
        ASSERT_TRUE(up.ok()) << up.status();
        upload_id = up->upload_id;
        ASSERT_TRUE(v.store->AppendUpload("acme", upload_id, 0, data).ok());
      };
      if (reloaded_before_commit) {
        {
          Vault v = OpenVault(dir);
          begin_and_append(v);
        }
        // The child is the restarted server: the client resumes where it says, then commits.
        RunAndKill(dir, "sealed", 1, /*stop=*/true, [&](Vault& v) {
          auto st = v.store->UploadStatus("acme", upload_id);
          if (!st.ok()) return;
          (void)v.store->AppendUpload("acme", upload_id, st->received,
                                      std::string_view(data).substr(st->received));
          (void)v.store->CommitUpload("acme", upload_id, common::Sha256Hex(data));
        });
      } else {
        // The child begins, appends and commits in one process; the parent learns the id from
        // the one upload directory it left.
        RunAndKill(dir, "sealed", 1, /*stop=*/true, [&](Vault& v) {
          begin_and_append(v);
          (void)v.store->CommitUpload("acme", upload_id, common::Sha256Hex(data));
        });
        for (const auto& f : fs::directory_iterator(dir + "/tenants/acme/uploads")) {
          upload_id = f.path().filename().string();
        }
      }
      ASSERT_FALSE(upload_id.empty());
      Vault v = OpenVault(dir);
      ExpectNoHalfVisibleObjects(dir);
      EXPECT_TRUE(v.store->List("acme", "")->empty()) << "the killed commit published nothing";
      auto st = v.store->UploadStatus("acme", upload_id);
      ASSERT_TRUE(st.ok()) << st.status();
      EXPECT_EQ(st->received, data.size()) << "the sealed final chunk was kept";
      auto info = v.store->CommitUpload("acme", upload_id, common::Sha256Hex(data));
      ASSERT_TRUE(info.ok()) << info.status();
      EXPECT_EQ(ReadWhole(v, "committed"), data);
      std::string ranged;
      ASSERT_TRUE(v.store->ReadChunks("acme", "committed", 0, 0, 64, [&](std::string_view b) {
        ranged.append(b);
        return absl::OkStatus();
      }).ok());
      EXPECT_EQ(ranged, data);
    }
  }
}

// Kills at random moments (no synchronisation point) during writes and rotations.
TEST(VaultCrashTest, RandomKillsDuringWritesAndRotations) {
  int rounds = std::getenv("VAULT_CRASH_ROUNDS") ? std::atoi(std::getenv("VAULT_CRASH_ROUNDS")) : 4;
  std::mt19937 rng(12345);
  TempDir tmp;
  std::string dir = tmp.path() + "/vault";
  {
    Vault v = OpenVault(dir);
    for (int i = 0; i < 6; ++i) {
      ASSERT_TRUE(PutString(*v.store, "acme", "base" + std::to_string(i), Pattern(100000, i)).ok());
    }
  }
  for (int round = 0; round < rounds; ++round) {
    int delay_ms = 5 + static_cast<int>(rng() % 60);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      Vault v = OpenVault(dir);
      for (int i = 0;; ++i) {
        (void)PutString(*v.store, "acme", "w" + std::to_string(i % 3), Pattern(300000, i));
        (void)v.store->RotateTenantKey("acme", i % 4 == 3);
      }
    }
    ::usleep(static_cast<useconds_t>(delay_ms) * 1000);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    Vault v = OpenVault(dir);
    ExpectNoHalfVisibleObjects(dir);
    auto list = v.store->List("acme", "");
    ASSERT_TRUE(list.ok()) << list.status();
    for (const auto& info : *list) {
      auto r =
          v.store->Get("acme", info.name, 0, [](std::string_view) { return absl::OkStatus(); });
      ASSERT_TRUE(r.ok()) << "round " << round << " " << info.name << ": " << r.status();
    }
  }
}

}  // namespace
}  // namespace warden::vault
