// DatasetStager: datasets land on a per-job tmpfs (or the /dev/shm fallback), are verified
// against the server's size and SHA-256, never land on a disk file system, and are gone after
// Wipe. The JobRunner stages before start and wipes after any ending. Runs as root (mount).
#include "agent/dataset_stager.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include "agent/job_runner.h"
#include "beat_until.h"
#include "common/encoding.h"

namespace warden::agent {
namespace {

using common::Json;
namespace fs = std::filesystem;

constexpr size_t kChunk = 65536;

std::string Random(size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(g());
  return s;
}

// A server that holds plaintexts and answers chunk ranges like the agent API does.
struct FakeVault {
  std::map<uint64_t, std::string> data;
  int calls = 0;
  absl::Status fail;  // returned instead of data when set
  DatasetFetcher Fetcher() {
    return [this](const std::string&, uint64_t index, uint64_t first, uint64_t count)
               -> absl::StatusOr<std::string> {
      ++calls;
      if (!fail.ok()) return fail;
      const std::string& d = data[index];
      if (first * kChunk >= d.size()) return std::string();
      return d.substr(first * kChunk, count * kChunk);
    };
  }
};

DatasetToStage Entry(uint64_t index, const std::string& name, const std::string& plain) {
  return DatasetToStage{index, name, "/data/" + std::to_string(index), false, plain.size(),
                        common::Sha256Hex(plain)};
}

std::string ReadAll(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class DatasetStagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = fs::path(::testing::TempDir()) / ("stager-" + std::to_string(::getpid()) + "-" +
                                               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    fs::create_directories(base_);
    shm_ = "/dev/shm/gpuwarden-stager-test-" + std::to_string(::getpid());
  }
  void TearDown() override {
    if (stager_) (void)stager_->WipeAllExcept({});
    std::error_code ec;
    fs::remove_all(shm_, ec);
    fs::remove_all(base_, ec);
  }
  DatasetStager& Make(bool mount, std::string shm = "") {
    DatasetStagerOptions o;
    o.dir = (base_ / "datasets").string();
    o.shm_dir = shm.empty() ? shm_ : shm;
    o.try_mount = mount;
    auto s = DatasetStager::Create(o);
    EXPECT_TRUE(s.ok()) << s.status();
    stager_ = std::move(*s);
    return *stager_;
  }
  fs::path base_;
  std::string shm_;
  std::unique_ptr<DatasetStager> stager_;
};

TEST_F(DatasetStagerTest, StagesIntoAPrivateTmpfsVerifiesAndUnmountsOnWipe) {
  DatasetStager& st = Make(true);
  FakeVault v;
  v.data[0] = Random(3 * 16 * kChunk + 123, 1);  // several fetch ranges and a partial chunk
  v.data[1] = "";                                // an empty object
  auto staged = st.Stage("job_1", {Entry(0, "train/v1", v.data[0]), Entry(1, "empty", "")}, v.Fetcher());
  ASSERT_TRUE(staged.ok()) << staged.status();
  ASSERT_EQ(staged->size(), 2u);
  EXPECT_EQ((*staged)[0].container_path, "/data/0");
  EXPECT_FALSE((*staged)[0].writable);
  const std::string file = (*staged)[0].host_dir + "/v1";
  EXPECT_EQ(ReadAll(file), v.data[0]);
  EXPECT_EQ(ReadAll((*staged)[1].host_dir + "/empty"), "");
  EXPECT_EQ(v.calls, 4);  // bounded ranges, never the whole object at once
  bool mounted = false;
  std::string root = st.JobRoot("job_1", &mounted);
  EXPECT_TRUE(mounted) << "expected a tmpfs mount at " << root;
  EXPECT_TRUE(DatasetStager::CheckMemoryBacked(root).ok());
  struct stat sb {};
  ASSERT_EQ(::stat(root.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat(file.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0400u);
  ASSERT_TRUE(st.Wipe("job_1").ok());
  EXPECT_EQ(st.JobRoot("job_1", &mounted), "");
  EXPECT_FALSE(mounted);
  EXPECT_FALSE(fs::exists(file));
  EXPECT_TRUE(st.Wipe("job_1").ok());  // idempotent
}

TEST_F(DatasetStagerTest, FallsBackToDevShmAndDeletesTheFilesOnWipe) {
  DatasetStager& st = Make(false);
  FakeVault v;
  v.data[0] = Random(100000, 2);
  auto staged = st.Stage("job_2", {Entry(0, "a/b/c.bin", v.data[0])}, v.Fetcher());
  ASSERT_TRUE(staged.ok()) << staged.status();
  const std::string file = (*staged)[0].host_dir + "/c.bin";
  EXPECT_EQ(file.rfind(shm_, 0), 0u) << file;
  EXPECT_EQ(ReadAll(file), v.data[0]);
  ASSERT_TRUE(st.Wipe("job_2").ok());
  EXPECT_FALSE(fs::exists(file));
  EXPECT_FALSE(fs::exists(shm_ + "/job_2"));
}

TEST_F(DatasetStagerTest, AttackRefusesADiskDirectoryAsFallback) {
  // Mount refused and the "shm" directory on the disk: staging must refuse, writing nothing.
  const std::string disk = (base_ / "not-shm").string();
  struct statfs sfs {};
  ASSERT_EQ(::statfs(base_.c_str(), &sfs), 0);
  ASSERT_FALSE(DatasetStager::CheckMemoryBacked(base_.string()).ok())
      << "the test's temp dir must be on a disk file system";
  DatasetStager& st = Make(false, disk);
  FakeVault v;
  v.data[0] = "secret plaintext";
  auto staged = st.Stage("job_3", {Entry(0, "s", v.data[0])}, v.Fetcher());
  ASSERT_FALSE(staged.ok());
  EXPECT_EQ(staged.status().code(), absl::StatusCode::kFailedPrecondition) << staged.status();
  EXPECT_NE(std::string(staged.status().message()).find("not memory-backed"), std::string::npos);
  EXPECT_EQ(v.calls, 0);
  EXPECT_FALSE(fs::exists(disk + "/job_3"));
}

TEST_F(DatasetStagerTest, AttackAWrongHashOrSizeOrIntegrityErrorFailsAndLeavesNothing) {
  DatasetStager& st = Make(true);
  FakeVault v;
  v.data[0] = Random(5000, 3);
  DatasetToStage bad_hash = Entry(0, "x", v.data[0]);
  bad_hash.sha256 = common::Sha256Hex("something else");
  auto r = st.Stage("job_4", {bad_hash}, v.Fetcher());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_EQ(st.JobRoot("job_4"), "");
  DatasetToStage short_size = Entry(0, "x", v.data[0]);
  short_size.size = 10;  // the server sends more than was recorded
  r = st.Stage("job_4", {short_size}, v.Fetcher());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_EQ(st.JobRoot("job_4"), "");
  v.fail = absl::DataLossError("dataset integrity error: chunk 0 does not authenticate");
  r = st.Stage("job_4", {Entry(0, "x", v.data[0])}, v.Fetcher());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_EQ(st.JobRoot("job_4"), "");
  EXPECT_FALSE(fs::exists(base_ / "datasets" / "job_4"));
  // A write dataset without a limit is refused (no unbounded tmpfs); bad job ids never become paths.
  DatasetToStage w = Entry(0, "x", v.data[0]);
  w.write = true;
  w.size = 0;
  EXPECT_EQ(st.Stage("job_4", {w}, v.Fetcher()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(st.Stage("../job", {}, v.Fetcher()).ok());
}

TEST_F(DatasetStagerTest, WipeAllExceptRemovesWhatNoReattachedJobHolds) {
  DatasetStager& st = Make(true);
  FakeVault v;
  v.data[0] = "abc";
  ASSERT_TRUE(st.Stage("job_keep", {Entry(0, "k", "abc")}, v.Fetcher()).ok());
  ASSERT_TRUE(st.Stage("job_gone", {Entry(0, "g", "abc")}, v.Fetcher()).ok());
  ASSERT_TRUE(st.WipeAllExcept({"job_keep"}).ok());
  EXPECT_NE(st.JobRoot("job_keep"), "");
  EXPECT_EQ(st.JobRoot("job_gone"), "");
}

// ---- the runner: stage before start, wipe after the end --------------------------------------

class RecordingExecutor final : public JobExecutor {
 public:
  std::string_view name() const override { return "rec"; }
  absl::Status Start(const ExecSpec& spec) override {
    started[spec.job_id] = spec;
    status[spec.job_id] = {ExecState::kRunning, 0, ""};
    return absl::OkStatus();
  }
  absl::StatusOr<ExecStatus> Poll(const std::string& id) override { return status[id]; }
  absl::Status Cancel(const std::string&, absl::Duration) override { return absl::OkStatus(); }
  std::pair<std::string, std::string> LogPaths(const std::string& id) const override {
    return {"/nonexistent/out", "/nonexistent/err"};
  }
  absl::StatusOr<std::vector<ExecSpec>> Recover() override { return std::vector<ExecSpec>{}; }
  absl::Status Forget(const std::string&) override { return absl::OkStatus(); }
  std::map<std::string, ExecSpec> started;
  std::map<std::string, ExecStatus> status;
};

Json WithDatasets(const std::string& id, const std::string& plain, const std::string& sha) {
  Json d = Json::array({Json{{"name", "train/v1"}, {"path", "/data/train"}, {"write", false},
                             {"size", plain.size()}, {"sha256", sha}, {"object_id", "obj_1"},
                             {"version", 1}}});
  return Json{{"id", id}, {"name", "n"}, {"run", {{"command", {"cat"}}, {"datasets", d}}},
              {"gpus", Json::array()}};
}

using testing::BeatUntil;
using testing::NoLogs;

TEST_F(DatasetStagerTest, RunnerStagesBeforeStartAndWipesAfterTheEnd) {
  DatasetStager& st = Make(true);
  FakeVault v;
  v.data[0] = Random(70000, 4);
  RecordingExecutor ex;
  JobRunner runner(&ex, "");
  runner.SetDatasetStager(&st);
  runner.SetDatasetFetcher(v.Fetcher());
  runner.Apply(Json::array({WithDatasets("job_r", v.data[0], common::Sha256Hex(v.data[0]))}));
  ASSERT_TRUE(BeatUntil(runner, [&] { return ex.started.count("job_r") == 1; }));
  const ExecSpec& spec = ex.started["job_r"];
  ASSERT_EQ(spec.datasets.size(), 1u);
  EXPECT_EQ(spec.datasets[0].container_path, "/data/train");
  EXPECT_EQ(ReadAll(spec.datasets[0].host_dir + "/v1"), v.data[0]);
  EXPECT_NE(st.JobRoot("job_r"), "");
  ex.status["job_r"] = {ExecState::kExited, 0, ""};
  Json r = runner.BuildReport(NoLogs(), {});
  ASSERT_EQ(r["jobs"].size(), 1u);
  EXPECT_EQ(r["jobs"][0]["state"], "exited");
  EXPECT_EQ(st.JobRoot("job_r"), "") << "staged data must be gone once the job ended";
}

TEST_F(DatasetStagerTest, RunnerFailsToStartWhenStagingFails) {
  DatasetStager& st = Make(true);
  FakeVault v;
  v.data[0] = "payload";
  RecordingExecutor ex;
  JobRunner runner(&ex, "");
  runner.SetDatasetStager(&st);
  runner.SetDatasetFetcher(v.Fetcher());
  runner.Apply(Json::array({WithDatasets("job_t", v.data[0], common::Sha256Hex("tampered"))}));
  Json r;
  ASSERT_TRUE(BeatUntil(runner, [&] {
    r = runner.BuildReport(NoLogs(), {});
    return !r["jobs"].empty();
  }));
  EXPECT_EQ(ex.started.count("job_t"), 0u) << "a job whose data did not verify must not start";
  ASSERT_EQ(r["jobs"].size(), 1u);
  EXPECT_EQ(r["jobs"][0]["state"], "failed_to_start");
  EXPECT_NE(r["jobs"][0]["reason"].get<std::string>().find("SHA-256"), std::string::npos) << r;
  EXPECT_EQ(st.JobRoot("job_t"), "");
  // No stager: refused with a reason, not started without its data.
  JobRunner bare(&ex, "");
  bare.Apply(Json::array({WithDatasets("job_u", v.data[0], common::Sha256Hex(v.data[0]))}));
  EXPECT_EQ(ex.started.count("job_u"), 0u);
  r = bare.BuildReport(NoLogs(), {});
  ASSERT_EQ(r["jobs"].size(), 1u);
  EXPECT_EQ(r["jobs"][0]["reason"], "staging its datasets failed: this agent cannot mount datasets");
}

// ---- write datasets (issue 7 write-back) ----

struct Upload {
  std::string job;
  uint64_t index = 0;
  std::string body;
  std::string sha256;
};

// Records what the server would receive; answers `reply` (OK by default).
struct FakeUploads {
  std::vector<Upload> got;
  std::vector<absl::Status> replies;  // consumed front to back; OK when empty
  DatasetUploader Uploader() {
    return [this](const std::string& job, uint64_t index, int fd, uint64_t size, const std::string& sha) {
      std::string body(size, '\0');
      EXPECT_EQ(::read(fd, body.data(), size), static_cast<ssize_t>(size));
      got.push_back(Upload{job, index, body, sha});
      if (replies.empty()) return absl::OkStatus();
      absl::Status s = replies.front();
      replies.erase(replies.begin());
      return s;
    };
  }
};

DatasetToStage Output(uint64_t index, const std::string& name, uint64_t limit) {
  return DatasetToStage{index, name, "/data/out" + std::to_string(index), true, limit, ""};
}

TEST_F(DatasetStagerTest, AWriteDatasetIsAnEmptyTmpfsOfItsLimitAndItsFileIsUploadedWithItsHash) {
  DatasetStager& st = Make(true);
  FakeVault v;
  v.data[0] = "input";
  auto staged = st.Stage("job_w", {Entry(0, "train/v1", v.data[0]), Output(1, "out/model", 1 << 20)}, v.Fetcher());
  ASSERT_TRUE(staged.ok()) << staged.status();
  ASSERT_EQ(staged->size(), 2u);
  const ExecDataset& out = (*staged)[1];
  EXPECT_TRUE(out.writable);
  EXPECT_EQ(out.container_path, "/data/out1");
  EXPECT_TRUE(fs::is_empty(out.host_dir));
  // Its own tmpfs, sized to the limit: writing past it fails (ENOSPC), nothing spills over.
  EXPECT_TRUE(DatasetStager::CheckMemoryBacked(out.host_dir).ok());
  struct statfs sf {};
  ASSERT_EQ(::statfs(out.host_dir.c_str(), &sf), 0);
  EXPECT_EQ(static_cast<uint64_t>(sf.f_blocks) * sf.f_bsize, 1u << 20);
  {
    std::ofstream big(out.host_dir + "/too-big", std::ios::binary);
    std::string mib(1 << 20, 'x');
    big << mib << mib;
    big.flush();
    EXPECT_FALSE(big.good()) << "a write past the limit must fail";
  }
  fs::remove(out.host_dir + "/too-big");
  const std::string result = Random(200000, 9);
  { std::ofstream(out.host_dir + "/model", std::ios::binary) << result; }
  { std::ofstream(out.host_dir + "/scratch-file") << "not written back"; }
  FakeUploads up;
  ASSERT_TRUE(st.WriteBack("job_w", *staged, up.Uploader()).ok());
  ASSERT_EQ(up.got.size(), 1u) << "only the write dataset, only its named file";
  EXPECT_EQ(up.got[0].job, "job_w");
  EXPECT_EQ(up.got[0].index, 1u);
  EXPECT_EQ(up.got[0].body, result);
  EXPECT_EQ(up.got[0].sha256, common::Sha256Hex(result));
  ASSERT_TRUE(st.Wipe("job_w").ok());
  EXPECT_EQ(st.JobRoot("job_w"), "");
  EXPECT_FALSE(fs::exists(out.host_dir));
}

TEST_F(DatasetStagerTest, AttackAMissingFileALinkOrAFifoIsNotWrittenBack) {
  DatasetStager& st = Make(true);
  FakeVault v;
  auto staged = st.Stage("job_x", {Output(0, "out/model", 1 << 20)}, v.Fetcher());
  ASSERT_TRUE(staged.ok()) << staged.status();
  const std::string dir = (*staged)[0].host_dir;
  FakeUploads up;
  absl::Status s = st.WriteBack("job_x", *staged, up.Uploader());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(s.message()).find("left no file /data/out0/model"), std::string::npos) << s;
  // A link to a host file (the job could plant one) must not make the agent upload that file.
  fs::create_symlink("/etc/shadow", dir + "/model");
  s = st.WriteBack("job_x", *staged, up.Uploader());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(s.message()).find("symbolic link"), std::string::npos) << s;
  fs::remove(dir + "/model");
  ASSERT_EQ(::mkfifo((dir + "/model").c_str(), 0600), 0);
  s = st.WriteBack("job_x", *staged, up.Uploader());  // must not block on the FIFO
  EXPECT_NE(std::string(s.message()).find("not a regular file"), std::string::npos) << s;
  EXPECT_TRUE(up.got.empty());
  // A directory that is not this job's staged output is refused, whatever the record says.
  std::vector<ExecDataset> forged = {ExecDataset{"out/model", "/etc", "/data/out", true}};
  EXPECT_EQ(st.WriteBack("job_x", forged, up.Uploader()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(up.got.empty());
}

Json WithOutput(const std::string& id) {
  Json d = Json::array({Json{{"name", "out/model"}, {"path", "/data/out"}, {"write", true}, {"size", uint64_t{1} << 20}}});
  return Json{{"id", id}, {"name", "n"}, {"run", {{"command", {"x"}}, {"datasets", d}}}, {"gpus", Json::array()}};
}

TEST_F(DatasetStagerTest, RunnerWritesBackOnlyAfterExitZeroAndReportsARefusal) {
  DatasetStager& st = Make(true);
  FakeVault v;
  RecordingExecutor ex;
  FakeUploads up;
  JobRunner runner(&ex, "");
  runner.SetDatasetStager(&st);
  runner.SetDatasetFetcher(v.Fetcher());
  runner.SetDatasetUploader(up.Uploader());
  runner.Apply(Json::array({WithOutput("job_ok"), WithOutput("job_fail"), WithOutput("job_cancel"),
                            WithOutput("job_denied"), WithOutput("job_retry")}));
  ASSERT_TRUE(BeatUntil(runner, [&] { return ex.started.size() == 5; }));
  for (const char* id : {"job_ok", "job_fail", "job_cancel", "job_denied", "job_retry"}) {
    ASSERT_EQ(ex.started.count(id), 1u) << id;
    std::ofstream(ex.started[id].datasets[0].host_dir + "/model") << "result of " << id;
  }
  ex.status["job_ok"] = {ExecState::kExited, 0, ""};
  ex.status["job_fail"] = {ExecState::kExited, 3, ""};
  ex.status["job_cancel"] = {ExecState::kCancelled, 143, ""};
  ex.status["job_denied"] = {ExecState::kExited, 0, ""};
  ex.status["job_retry"] = {ExecState::kExited, 0, ""};
  // Uploads run on the runner's worker in the order the beat met them (std::map order:
  // job_denied, job_ok, job_retry; job_cancel and job_fail upload nothing); job_retry's first
  // attempt meets an unreachable server and is tried again at a later beat.
  up.replies = {absl::PermissionDeniedError("write: denied by policy p"), absl::OkStatus(),
                absl::UnavailableError("server unreachable")};
  std::map<std::string, Json> by_id;
  ASSERT_TRUE(BeatUntil(runner, [&] {
    Json r = runner.BuildReport(NoLogs(), {});
    for (const Json& j : r["jobs"]) by_id[j["id"].get<std::string>()] = j;
    return by_id.size() == 5;
  }));
  EXPECT_EQ(by_id["job_ok"]["state"], "exited");
  EXPECT_EQ(by_id["job_fail"]["state"], "exited");
  EXPECT_EQ(by_id["job_cancel"]["state"], "cancelled");
  EXPECT_EQ(by_id["job_denied"]["state"], "write_back_failed");
  EXPECT_NE(by_id["job_denied"]["reason"].get<std::string>().find("denied by policy p"), std::string::npos);
  EXPECT_EQ(by_id["job_retry"]["state"], "exited");
  // Four uploads: the failed job and the cancelled one wrote nothing; job_retry's output stayed
  // staged after its first attempt failed, and the second attempt sent it whole.
  ASSERT_EQ(up.got.size(), 4u);
  std::multiset<std::string> uploaded;
  for (const Upload& u : up.got) uploaded.insert(u.job);
  EXPECT_EQ(uploaded, (std::multiset<std::string>{"job_ok", "job_denied", "job_retry", "job_retry"}));
  EXPECT_EQ(up.got.back().job, "job_retry");
  EXPECT_EQ(up.got.back().body, "result of job_retry");
  for (const char* id : {"job_ok", "job_fail", "job_cancel", "job_denied", "job_retry"}) {
    EXPECT_EQ(st.JobRoot(id), "") << id << ": staged data must be gone once it is settled";
  }
}

}  // namespace
}  // namespace warden::agent
