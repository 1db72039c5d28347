// The verified GPU handoff (issue 7, DESIGN invariant 3) on the simulated backend: the state
// machine, every failure staying quarantined, persistence across agent restarts, MIG instances,
// the scrub report codec, the subprocess scrubber's failure paths, the CUDA scrubber's loading
// errors on a machine without a driver, and sanity checks of the verify kernel's PTX.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "gmock/gmock.h"
#include "gpu/gpu.h"
#include "gpu/handoff.h"
#include "gtest/gtest.h"

namespace warden::gpu {
namespace {

using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/handoff_test.XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class HandoffTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = SimGpuBackend::Create("2xH100-80GB,1xH200-141GB:mig");
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = std::move(*b);
    scrubber_ = backend_->NewScrubber();
    auto devs = backend_->Discover();
    ASSERT_TRUE(devs.ok());
    gpu0_ = (*devs)[0].uuid;
    gpu1_ = (*devs)[1].uuid;
    mig_gpu_ = (*devs)[2].uuid;
  }

  std::unique_ptr<HandoffController> Make(const std::string& state_path = "") {
    HandoffOptions o;
    o.state_path = state_path;
    o.clock = &clock_;
    auto c = HandoffController::Create(o, backend_.get(), scrubber_.get());
    EXPECT_TRUE(c.ok()) << c.status();
    auto devs = backend_->Discover();
    EXPECT_TRUE((*c)->Sync(*devs).ok());
    return std::move(*c);
  }

  HandoffState StateOf(HandoffController& c, const std::string& uuid) {
    auto d = c.Get(uuid);
    EXPECT_TRUE(d.has_value()) << uuid;
    return d ? d->state : HandoffState::kAvailable;
  }

  common::FakeClock clock_;
  std::unique_ptr<SimGpuBackend> backend_;
  std::unique_ptr<MemoryScrubber> scrubber_;
  std::string gpu0_, gpu1_, mig_gpu_;
};

TEST_F(HandoffTest, NewDevicesStartQuarantinedAndTheHandoffMakesThemAvailable) {
  auto c = Make();
  EXPECT_EQ(StateOf(*c, gpu0_), HandoffState::kQuarantined);
  EXPECT_FALSE(c->Schedulable(gpu0_));
  EXPECT_THAT(c->Get(gpu0_)->reason, HasSubstr("never verified"));
  auto r = c->RunHandoff(gpu0_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->state, HandoffState::kAvailable) << r->reason;
  ASSERT_TRUE(r->scrub.has_value());
  EXPECT_TRUE(r->scrub->passed);
  EXPECT_GE(r->scrub->fraction_of_free, 0.9);
  EXPECT_TRUE(c->Schedulable(gpu0_));
  EXPECT_EQ(backend_->scrub_count(gpu0_), 1);
}

TEST_F(HandoffTest, FullCycleAssignReleaseScrubAvailable) {
  auto c = Make();
  ASSERT_TRUE(c->RunHandoff(gpu0_).ok());
  ASSERT_TRUE(c->Assign(gpu0_, "acme").ok());
  EXPECT_EQ(StateOf(*c, gpu0_), HandoffState::kAssigned);
  EXPECT_FALSE(c->Schedulable(gpu0_));
  ASSERT_TRUE(c->Release(gpu0_).ok());
  EXPECT_EQ(StateOf(*c, gpu0_), HandoffState::kQuarantined);
  EXPECT_THAT(c->Get(gpu0_)->reason, HasSubstr("released by tenant acme"));
  auto r = c->RunHandoff(gpu0_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state, HandoffState::kAvailable);
  EXPECT_EQ(backend_->scrub_count(gpu0_), 2);
  EXPECT_TRUE(c->Assign(gpu0_, "globex").ok());
}

TEST_F(HandoffTest, AttackSecondTenantCannotTakeAnAssignedOrUnverifiedDevice) {
  auto c = Make();
  // Never verified: nobody gets it.
  EXPECT_EQ(c->Assign(gpu0_, "acme").code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(c->RunHandoff(gpu0_).ok());
  ASSERT_TRUE(c->Assign(gpu0_, "acme").ok());
  absl::Status s = c->Assign(gpu0_, "globex");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("another tenant"));
  ASSERT_TRUE(c->Release(gpu0_).ok());
  // Released but not yet verified: the next tenant is refused, naming the state and reason.
  s = c->Assign(gpu0_, "globex");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("quarantined (released by tenant acme"));
}

TEST_F(HandoffTest, SameTenantIsNotHandedBackWithoutTheScrub) {
  auto c = Make();
  ASSERT_TRUE(c->RunHandoff(gpu0_).ok());
  ASSERT_TRUE(c->Assign(gpu0_, "acme").ok());
  ASSERT_TRUE(c->Release(gpu0_).ok());
  EXPECT_EQ(c->Assign(gpu0_, "acme").code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(HandoffTest, TimeSlicedHoldersOfOneTenantShareUntilTheLastRelease) {
  auto c = Make();
  ASSERT_TRUE(c->RunHandoff(gpu0_).ok());
  ASSERT_TRUE(c->Assign(gpu0_, "acme").ok());
  ASSERT_TRUE(c->Assign(gpu0_, "acme").ok());
  EXPECT_EQ(c->Get(gpu0_)->holders, 2);
  ASSERT_TRUE(c->Release(gpu0_).ok());
  EXPECT_EQ(StateOf(*c, gpu0_), HandoffState::kAssigned);
  ASSERT_TRUE(c->Release(gpu0_).ok());
  EXPECT_EQ(StateOf(*c, gpu0_), HandoffState::kQuarantined);
  EXPECT_EQ(c->Release(gpu0_).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(HandoffTest, AttackLeftoverProcessKeepsTheDeviceQuarantinedAndIsNeverScrubbedAround) {
  auto c = Make();
  ASSERT_TRUE(backend_->AddProcess(gpu0_, GpuProcess{4242, 100, ""}).ok());
  auto r = c->RunHandoff(gpu0_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state, HandoffState::kQuarantined);
  EXPECT_THAT(r->reason, HasSubstr("pid 4242"));
  EXPECT_FALSE(r->scrub.has_value());
  EXPECT_EQ(backend_->scrub_count(gpu0_), 0);  // no scrub while someone can still read it
  EXPECT_EQ(c->Get(gpu0_)->failures, 1);
  EXPECT_FALSE(c->Schedulable(gpu0_));
  // The other GPU is unaffected.
  EXPECT_EQ(c->RunHandoff(gpu1_)->state, HandoffState::kAvailable);
  ASSERT_TRUE(backend_->RemoveProcess(gpu0_, 4242).ok());
  r = c->RunHandoff(gpu0_);
  EXPECT_EQ(r->state, HandoffState::kAvailable);
  EXPECT_EQ(c->Get(gpu0_)->failures, 0);
}

TEST_F(HandoffTest, AttackVerifyMismatchKeepsTheDeviceQuarantined) {
  auto c = Make();
  ASSERT_TRUE(backend_->InjectVerifyMismatch(gpu0_, 17).ok());
  auto r = c->RunHandoff(gpu0_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state, HandoffState::kQuarantined);
  EXPECT_THAT(r->reason, HasSubstr("verification failed: 17 words"));
  EXPECT_EQ(c->Get(gpu0_)->last_scrub_mismatches, 17u);
  EXPECT_FALSE(c->Schedulable(gpu0_));
  EXPECT_EQ(c->RunHandoff(gpu0_)->state, HandoffState::kAvailable);  // injected once
}

TEST_F(HandoffTest, ScrubErrorKeepsTheDeviceQuarantined) {
  auto c = Make();
  ASSERT_TRUE(backend_->InjectScrubError(gpu0_, 2).ok());
  EXPECT_THAT(c->RunHandoff(gpu0_)->reason, HasSubstr("scrub failed: simulated driver error"));
  EXPECT_EQ(c->RunHandoff(gpu0_)->state, HandoffState::kQuarantined);
  EXPECT_EQ(c->Get(gpu0_)->failures, 2);
  EXPECT_EQ(c->RunHandoff(gpu0_)->state, HandoffState::kAvailable);
}

// A scrubber that lets a process attach while it runs: the final process check must catch it.
class RacingScrubber final : public MemoryScrubber {
 public:
  RacingScrubber(SimGpuBackend* b, MemoryScrubber* inner) : b_(b), inner_(inner) {}
  absl::StatusOr<ScrubReport> Scrub(std::string_view uuid, const ScrubOptions& o) override {
    EXPECT_TRUE(b_->AddProcess(uuid, GpuProcess{777, 1, ""}).ok());
    return inner_->Scrub(uuid, o);
  }

 private:
  SimGpuBackend* b_;
  MemoryScrubber* inner_;
};

TEST_F(HandoffTest, AttackProcessAttachingDuringTheScrubIsCaughtAfterwards) {
  RacingScrubber racing(backend_.get(), scrubber_.get());
  auto c = HandoffController::Create({}, backend_.get(), &racing);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->Sync(*backend_->Discover()).ok());
  auto r = (*c)->RunHandoff(gpu0_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state, HandoffState::kQuarantined);
  EXPECT_THAT(r->reason, HasSubstr("appeared during the scrub (pid 777)"));
}

TEST_F(HandoffTest, OnlyQuarantinedDevicesAreHandedOff) {
  auto c = Make();
  ASSERT_TRUE(c->RunHandoff(gpu0_).ok());
  EXPECT_EQ(c->RunHandoff(gpu0_).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(c->RunHandoff("GPU-nope").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(c->Quarantine(gpu0_, "operator says so").ok());
  EXPECT_EQ(c->Get(gpu0_)->reason, "operator says so");
  EXPECT_FALSE(c->Schedulable(gpu0_));
}

TEST_F(HandoffTest, RestartKeepsQuarantinedDevicesQuarantined) {
  TempDir dir;
  const std::string path = dir.path() + "/gpu-handoff.json";
  {
    auto c = Make(path);
    ASSERT_TRUE(c->RunHandoff(gpu0_).ok());
    ASSERT_TRUE(c->RunHandoff(gpu1_).ok());
    ASSERT_TRUE(c->Assign(gpu0_, "acme").ok());
    ASSERT_TRUE(c->Release(gpu0_).ok());  // quarantined, awaiting the handoff
    ASSERT_TRUE(c->Assign(gpu1_, "acme").ok());
  }
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto c = Make(path);
  EXPECT_EQ(StateOf(*c, gpu0_), HandoffState::kQuarantined);
  EXPECT_THAT(c->Get(gpu0_)->reason, HasSubstr("released by tenant acme"));
  EXPECT_FALSE(c->Schedulable(gpu0_));
  EXPECT_EQ(StateOf(*c, gpu1_), HandoffState::kAssigned);  // a running job survives the restart
  EXPECT_EQ(c->Get(gpu1_)->tenant, "acme");
}

TEST_F(HandoffTest, SyncWithoutChangesDoesNotRewriteTheStateFile) {
  TempDir dir;
  const std::string path = dir.path() + "/gpu-handoff.json";
  auto c = Make(path);
  ASSERT_EQ(::unlink(path.c_str()), 0);
  ASSERT_TRUE(c->Sync(*backend_->Discover()).ok());  // every heartbeat does this
  EXPECT_NE(::access(path.c_str(), F_OK), 0);
  ASSERT_TRUE(backend_->CreateMigInstance(mig_gpu_, 19).ok());
  ASSERT_TRUE(c->Sync(*backend_->Discover()).ok());  // a new device: saved
  EXPECT_EQ(::access(path.c_str(), F_OK), 0);
}

TEST_F(HandoffTest, RestartDuringAScrubQuarantinesAgain) {
  TempDir dir;
  const std::string path = dir.path() + "/gpu-handoff.json";
  std::map<std::string, DeviceHandoff, std::less<>> m;
  DeviceHandoff d;
  d.uuid = gpu0_;
  d.state = HandoffState::kScrubbing;
  m[d.uuid] = d;
  d.uuid = gpu1_;
  d.state = HandoffState::kVerified;
  m[d.uuid] = d;
  std::ofstream(path) << EncodeHandoffState(m);
  auto c = Make(path);
  for (const auto& u : {gpu0_, gpu1_}) {
    EXPECT_EQ(StateOf(*c, u), HandoffState::kQuarantined);
    EXPECT_THAT(c->Get(u)->reason, HasSubstr("stopped during the handoff"));
  }
}

TEST_F(HandoffTest, AttackCorruptStateFileQuarantinesEveryDevice) {
  TempDir dir;
  const std::string path = dir.path() + "/gpu-handoff.json";
  {
    auto c = Make(path);
    ASSERT_TRUE(c->RunHandoff(gpu0_).ok());
    EXPECT_TRUE(c->Schedulable(gpu0_));
  }
  for (const std::string& text :
       {std::string("{not json"), std::string("{\"version\":1,\"devices\":[],\"x\":1}"),
        std::string("{\"version\":2,\"devices\":[]}")}) {
    std::ofstream(path, std::ios::trunc) << text;
    auto c = Make(path);
    EXPECT_FALSE(c->Schedulable(gpu0_)) << text;
    EXPECT_THAT(c->Get(gpu0_)->reason, HasSubstr("state file unreadable")) << text;
  }
}

TEST_F(HandoffTest, StateFileDecoderIsStrict) {
  std::map<std::string, DeviceHandoff, std::less<>> m;
  DeviceHandoff d;
  d.uuid = "GPU-1";
  d.state = HandoffState::kAvailable;
  d.tenant = "acme";
  d.last_scrub_gbps = 1234.5;
  m[d.uuid] = d;
  auto back = DecodeHandoffState(EncodeHandoffState(m));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->at("GPU-1").state, HandoffState::kAvailable);
  EXPECT_EQ(back->at("GPU-1").tenant, "acme");
  std::string text = EncodeHandoffState(m);
  std::string dup = "{\"version\":1,\"devices\":[" +
                    text.substr(text.find('{', 1), text.rfind(']') - text.find('{', 1)) + "," +
                    text.substr(text.find('{', 1), text.rfind(']') - text.find('{', 1)) + "]}";
  EXPECT_EQ(DecodeHandoffState(dup).status().code(), absl::StatusCode::kDataLoss);
  std::string bad_state = text;
  bad_state.replace(bad_state.find("available"), 9, "availabel");
  EXPECT_THAT(std::string(DecodeHandoffState(bad_state).status().message()),
              HasSubstr("unknown state"));
}

TEST_F(HandoffTest, DevicesAppearingLaterStartQuarantinedAndGoneOnesAreDropped) {
  auto c = Make();
  ASSERT_TRUE(c->RunHandoff(gpu0_).ok());
  auto mig = backend_->CreateMigInstance(mig_gpu_, 9);
  ASSERT_TRUE(mig.ok());
  ASSERT_TRUE(c->Sync(*backend_->Discover()).ok());
  EXPECT_EQ(StateOf(*c, mig->uuid), HandoffState::kQuarantined);
  EXPECT_EQ(c->Get(mig->uuid)->parent_uuid, mig_gpu_);
  ASSERT_TRUE(backend_->DestroyMigInstance(mig_gpu_, mig->uuid).ok());
  ASSERT_TRUE(c->Sync(*backend_->Discover()).ok());
  EXPECT_FALSE(c->Get(mig->uuid).has_value());
  EXPECT_TRUE(c->Schedulable(gpu0_));
}

TEST_F(HandoffTest, MigInstancesAreHandedOffOneByOne) {
  auto a = backend_->CreateMigInstance(mig_gpu_, 9);
  auto b = backend_->CreateMigInstance(mig_gpu_, 9);
  ASSERT_TRUE(a.ok() && b.ok());
  auto c = Make();
  ASSERT_TRUE(backend_->AddProcess(mig_gpu_, GpuProcess{99, 1, a->uuid}).ok());
  auto ra = c->RunHandoff(a->uuid);
  auto rb = c->RunHandoff(b->uuid);
  EXPECT_EQ(ra->state, HandoffState::kQuarantined);  // its own process blocks it
  EXPECT_EQ(rb->state, HandoffState::kAvailable);    // the neighbour's does not
  EXPECT_EQ(backend_->scrub_count(b->uuid), 1);
  // The physical GPU in MIG mode is never scheduled whole and is not scrubbed whole.
  auto rg = c->RunHandoff(mig_gpu_);
  EXPECT_EQ(rg->state, HandoffState::kQuarantined);
  EXPECT_THAT(rg->reason, HasSubstr("MIG mode is on"));
  EXPECT_EQ(backend_->scrub_count(mig_gpu_), 0);
  std::vector<HandoffReport> all = c->RunAllHandoffs();
  for (const auto& r : all) EXPECT_NE(r.uuid, mig_gpu_);
}

TEST_F(HandoffTest, MigModeChangeQuarantinesTheGpu) {
  auto c = Make();
  ASSERT_TRUE(c->RunHandoff(gpu0_).ok());
  ASSERT_TRUE(backend_->SetMigMode(gpu0_, true).ok());
  ASSERT_TRUE(c->Sync(*backend_->Discover()).ok());
  EXPECT_EQ(StateOf(*c, gpu0_), HandoffState::kQuarantined);
  EXPECT_THAT(c->Get(gpu0_)->reason, HasSubstr("MIG mode changed"));
}

TEST_F(HandoffTest, AnnotateCopiesTheStatusIntoTheInventory) {
  auto a = backend_->CreateMigInstance(mig_gpu_, 19);
  ASSERT_TRUE(a.ok());
  auto c = Make();
  ASSERT_TRUE(c->RunHandoff(gpu1_).ok());
  auto devs = *backend_->Discover();
  c->Annotate(devs);
  ASSERT_TRUE(devs[1].handoff.has_value());
  EXPECT_EQ(devs[1].handoff->state, HandoffState::kAvailable);
  EXPECT_EQ(devs[0].handoff->state, HandoffState::kQuarantined);
  ASSERT_TRUE(devs[2].mig_instances[0].handoff.has_value());
  EXPECT_EQ(devs[2].mig_instances[0].handoff->state, HandoffState::kQuarantined);
}

TEST(HandoffStateTest, NamesRoundTrip) {
  for (HandoffState s : {HandoffState::kAvailable, HandoffState::kAssigned,
                         HandoffState::kQuarantined, HandoffState::kScrubbing,
                         HandoffState::kVerified}) {
    EXPECT_EQ(ParseHandoffState(HandoffStateName(s)), s);
  }
  EXPECT_FALSE(ParseHandoffState("Available").has_value());
  EXPECT_FALSE(ParseHandoffState("").has_value());
}

// ---- scrub report and subprocess scrubber -----------------------------------------------------

ScrubReport SampleReport(bool passed) {
  ScrubReport r;
  r.device_uuid = "GPU-0123";
  r.device_name = "NVIDIA H200";
  r.total_bytes = 150000000000;
  r.free_bytes = 149000000000;
  r.scrubbed_bytes = 148000000000;
  r.chunks = 140;
  r.fraction_of_free = 0.993;
  r.write_gbps = 4000;
  r.passed = passed;
  if (!passed) {
    r.zero_mismatches = 3;
    r.failure = "3 words";
  }
  return r;
}

TEST(ScrubReportTest, JsonRoundTripsAndAPassWithMismatchesIsRefused) {
  auto back = ScrubReportFromJson(ScrubReportToJson(SampleReport(true)));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->scrubbed_bytes, 148000000000u);
  EXPECT_TRUE(back->passed);
  ScrubReport lie = SampleReport(false);
  lie.passed = true;
  EXPECT_THAT(std::string(ScrubReportFromJson(ScrubReportToJson(lie)).status().message()),
              HasSubstr("claims a pass"));
  EXPECT_FALSE(ScrubReportFromJson("{}").ok());
  EXPECT_FALSE(ScrubReportFromJson("[1]").ok());
}

// Runs `script` through sh as the scrub command; the scrubber appends --uuid U --min-fraction F.
std::unique_ptr<MemoryScrubber> ShellScrubber(const std::string& script,
                                              absl::Duration timeout = absl::Seconds(10)) {
  return NewSubprocessScrubber({"/bin/sh", "-c", script, "scrub"}, timeout);
}

TEST(SubprocessScrubberTest, PassesTheUuidInArgvAndCudaVisibleDevices) {
  const std::string report = ScrubReportToJson(SampleReport(true));
  auto s = ShellScrubber("[ \"$2\" = GPU-0123 ] && [ \"$CUDA_VISIBLE_DEVICES\" = GPU-0123 ] && "
                         "[ \"$3\" = --min-fraction ] && echo '" + report + "'");
  auto r = s->Scrub("GPU-0123", {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->passed);
}

TEST(SubprocessScrubberTest, EveryFailureIsAnErrorNamingIt) {
  const std::string failed = ScrubReportToJson(SampleReport(false));
  const std::string passed = ScrubReportToJson(SampleReport(true));
  struct Case {
    std::string script;
    std::string want;
  } cases[] = {
      {"echo '{\"error\":\"CUDA driver library libcuda.so.1 not found\"}'; exit 1",
       "libcuda.so.1 not found"},
      {"echo garbage; exit 0", "no valid report"},
      {"kill -9 $$", "died with signal 9"},
      {"echo '" + passed + "'; exit 3", "contradicts its report"},
      {"echo '" + failed + "'; exit 0", "contradicts its report"},
      {"exec /nonexistent/gpuwarden", "no valid report"},
  };
  for (const Case& c : cases) {
    auto r = ShellScrubber(c.script)->Scrub("GPU-0123", {});
    ASSERT_FALSE(r.ok()) << c.script;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.want)) << c.script;
  }
  // A report that ran and failed is a report, not an error: the controller quarantines on it.
  auto r = ShellScrubber("echo '" + failed + "'; exit 3")->Scrub("GPU-0123", {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->passed);
  // Another device's report is refused.
  r = ShellScrubber("echo '" + passed + "'")->Scrub("GPU-4567", {});
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("another device"));
}

TEST(SubprocessScrubberTest, AHangingScrubIsKilledAtTheTimeout) {
  auto s = ShellScrubber("exec sleep 30", absl::Milliseconds(300));
  auto t0 = absl::Now();
  auto r = s->Scrub("GPU-0123", {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
}

TEST(SubprocessScrubberTest, AttackUuidWithShellOrEnvCharactersIsRefused) {
  auto s = ShellScrubber("echo should-not-run");
  for (const char* u : {"GPU-1;rm -rf /", "GPU-1\nX=1", "GPU 1", "$(id)"}) {
    EXPECT_EQ(s->Scrub(u, {}).status().code(), absl::StatusCode::kInvalidArgument) << u;
  }
}

// ---- CUDA scrubber on a machine without a driver ---------------------------------------------

TEST(CudaScrubberTest, MissingLibcudaIsNotFoundWithAClearMessage) {
  auto s = CreateCudaScrubber("/nonexistent/libcuda.so.1");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("no NVIDIA driver"));
}

TEST(CudaScrubberTest, ALibraryWithoutTheDriverApiIsRefused) {
  auto s = CreateCudaScrubber("libc.so.6");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("cuInit"));
}

// A scrubber that cannot load keeps the device quarantined through the controller.
class UnloadableScrubber final : public MemoryScrubber {
 public:
  absl::StatusOr<ScrubReport> Scrub(std::string_view, const ScrubOptions&) override {
    auto s = CreateCudaScrubber("/nonexistent/libcuda.so.1");
    return s.status();
  }
};

TEST_F(HandoffTest, WithoutLibcudaTheDeviceStaysQuarantinedWithTheReason) {
  UnloadableScrubber none;
  auto c = HandoffController::Create({}, backend_.get(), &none);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->Sync(*backend_->Discover()).ok());
  auto r = (*c)->RunHandoff(gpu0_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state, HandoffState::kQuarantined);
  EXPECT_THAT(r->reason, HasSubstr("libcuda.so.1 not found"));
  EXPECT_FALSE((*c)->Schedulable(gpu0_));
}

TEST(CudaUuidTest, NvmlAndCudaSpellingsMatch) {
  const unsigned char bytes[16] = {0xAB, 0xCD, 0xEF, 0x01, 0x23, 0x45, 0x67, 0x89,
                                   0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x60, 0x71};
  EXPECT_EQ(FormatUuidBytes(bytes), "abcdef01-2345-6789-0a1b-2c3d4e5f6071");
  EXPECT_EQ(NormalizeDeviceUuid("GPU-ABCDEF01-2345-6789-0A1B-2C3D4E5F6071"),
            FormatUuidBytes(bytes));
  EXPECT_EQ(NormalizeDeviceUuid("MIG-abcdef01-2345-6789-0a1b-2c3d4e5f6071"),
            FormatUuidBytes(bytes));
}

// ---- the verify kernel's PTX -------------------------------------------------------------------
// No ptxas here (no CUDA toolkit in the build); these catch the slips a JIT would reject, and
// tests/gpu/run-all.sh runs the kernel for real.

TEST(VerifyPtxTest, DeclaresThePortableTargetAndTheEntryTheScrubberLaunches) {
  const std::string ptx = VerifyKernelPtx();
  EXPECT_THAT(ptx, HasSubstr(".version 6.0\n"));
  EXPECT_THAT(ptx, HasSubstr(".target sm_70\n"));
  EXPECT_THAT(ptx, HasSubstr(".address_size 64\n"));
  EXPECT_THAT(ptx, HasSubstr(std::string(".visible .entry ") + kVerifyKernelName + "("));
  // Four parameters in the order the launch passes them: data, n16, expected, count.
  std::regex param(R"(\.param \.(u64|u32) (p_\w+))");
  std::vector<std::string> params;
  for (auto it = std::sregex_iterator(ptx.begin(), ptx.end(), param); it != std::sregex_iterator();
       ++it) {
    params.push_back((*it)[1].str() + " " + (*it)[2].str());
  }
  EXPECT_EQ(params, (std::vector<std::string>{"u64 p_data", "u64 p_n16", "u32 p_expected",
                                              "u64 p_count"}));
  for (unsigned char c : ptx) EXPECT_TRUE(c == '\n' || c == '\t' || (c >= 0x20 && c < 0x7f));
}

TEST(VerifyPtxTest, BracesBalanceRegistersAreDeclaredAndBranchTargetsExist) {
  const std::string ptx = VerifyKernelPtx();
  int depth = 0;
  for (char c : ptx) {
    depth += c == '{' ? 1 : c == '}' ? -1 : 0;
    ASSERT_GE(depth, 0);
  }
  EXPECT_EQ(depth, 0);
  std::map<std::string, int> declared;
  std::regex decl(R"(\.reg \.\w+\s+%(\w+)<(\d+)>)");
  for (auto it = std::sregex_iterator(ptx.begin(), ptx.end(), decl); it != std::sregex_iterator();
       ++it) {
    declared[(*it)[1].str()] = std::stoi((*it)[2].str());
  }
  EXPECT_EQ(declared.size(), 3u);
  std::regex use(R"(%(p|rd|r)(\d+))");
  int uses = 0;
  for (auto it = std::sregex_iterator(ptx.begin(), ptx.end(), use); it != std::sregex_iterator();
       ++it, ++uses) {
    const std::string kind = (*it)[1].str();
    ASSERT_TRUE(declared.count(kind)) << kind;
    EXPECT_LT(std::stoi((*it)[2].str()), declared[kind]) << (*it)[0].str();
  }
  EXPECT_GT(uses, 40);
  std::set<std::string> labels, targets;
  std::regex label(R"(\n(\w+):)"), bra(R"(bra\s+(\w+);)");
  for (auto it = std::sregex_iterator(ptx.begin(), ptx.end(), label); it != std::sregex_iterator();
       ++it) {
    labels.insert((*it)[1].str());
  }
  for (auto it = std::sregex_iterator(ptx.begin(), ptx.end(), bra); it != std::sregex_iterator();
       ++it) {
    targets.insert((*it)[1].str());
  }
  EXPECT_EQ(targets, (std::set<std::string>{"DONE", "LOOP", "END"}));
  for (const auto& t : targets) EXPECT_TRUE(labels.count(t)) << t;
  // Reads are 16-byte vectors, the only store is the atomic add to the counter.
  EXPECT_THAT(ptx, HasSubstr("ld.global.v4.u32"));
  EXPECT_THAT(ptx, HasSubstr("atom.global.add.u64"));
  EXPECT_EQ(ptx.find("st.global"), std::string::npos);
}

}  // namespace
}  // namespace warden::gpu
