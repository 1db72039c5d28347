// The scheduler simulator behind `gpuwarden sim`: the real Scheduler against a generated cluster
// (simulated H100 nodes in a general pool, a MIG pool and a pool dedicated to one tenant) and a
// generated job stream (whole-GPU gangs, MIG profiles, time-sliced fractions, CPU-only jobs from
// eight tenants of every isolation policy, durations), all from one seed. Deterministic apart
// from the timings. Single-threaded.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>

#include "absl/status/statusor.h"

namespace warden::sched {

struct SimOptions {
  int nodes = 100;
  int gpus_per_node = 8;
  int jobs = 1000;
  uint64_t seed = 1;
  // After the first pass over all queued jobs: this many rounds of "the earliest-ending 5% of
  // running jobs finish, their GPUs are verified, one more pass".
  int churn_rounds = 10;
  // Run CheckNode after every placement inside the passes (slower; off by default, when the
  // full checker runs after each pass instead).
  bool check_each_decision = false;
};

struct SimReport {
  int64_t nodes = 0, gpus = 0, jobs = 0;
  // First pass: every job queued, one Schedule() call.
  int64_t first_pass_placements = 0;
  double first_pass_seconds = 0;
  double placements_per_second = 0;  // first pass
  int64_t decisions = 0;             // all passes: jobs decided (placed or left queued)
  int64_t latency_p50_ns = 0, latency_p99_ns = 0, latency_p999_ns = 0, latency_max_ns = 0;  // per decision, all passes
  double gpu_utilisation = 0;  // after the first pass: held GPU capacity / all GPU capacity
  double fragmentation = 0;    // after the first pass: see sim.cc
  int64_t total_placements = 0, finished = 0, still_queued = 0, mig_mode_changes = 0;
  int64_t violations = 0;
  std::string first_violation;
  std::string top_queue_reason;  // the most common reason of jobs left queued
};

// InvalidArgument for sizes out of range (nodes 1..100000, gpus 1..16, jobs 0..5000000).
absl::StatusOr<SimReport> RunSimulation(const SimOptions& options);

// Prints the report as `key: value` lines (placements/s, decision latency, utilisation,
// fragmentation, violations, ...).
void PrintSimReport(const SimOptions& options, const SimReport& report, std::ostream& out);

// `gpuwarden sim --nodes N --gpus-per-node G --jobs J --seed S [--churn-rounds R]
// [--check-each-decision]`. Returns the exit code: 0, 1 when violations were found, 2 for usage.
int RunSimCommand(int argc, char** argv);

}  // namespace warden::sched
