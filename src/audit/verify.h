// Offline verification of a copy of the audit log (`gpuwarden audit verify DIR`): recomputes the
// Merkle tree from the segment files, checks every checkpoint's signature against the audit
// public key, the checkpoint chain (seq, prev hash, growing sizes and times), every checkpoint's
// root against the recomputed tree, seq continuity across segments and the indexes. Needs
// nothing but the files and the public key; never writes. Streams: memory is O(one segment).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "audit/checkpoint.h"

namespace warden::audit {

struct VerifyOptions {
  std::string dir;
  // SubjectPublicKeyInfo PEM of the audit key. Unset: DIR/audit.pub is used and the report says
  // so (a key stored beside the log proves nothing against whoever could rewrite the log).
  std::optional<std::string> public_key_pem;
  // Events after the last checkpoint are a problem unless allowed (a live or crashed log has
  // up to N events or T seconds of them; a cleanly stopped one has none).
  bool allow_unsigned_tail = false;
  // A checkpoint the auditor kept from earlier (text): the log's chain must contain it exactly,
  // which detects a log truncated together with its checkpoints.
  std::optional<std::string> trusted_checkpoint;
};

// One problem, as precisely as it can be placed.
struct VerifyProblem {
  std::string file;     // file name within DIR ("" when not about one file)
  int64_t seq = -1;     // event seq, or checkpoint seq for checkpoint problems; -1 when none
  int64_t offset = -1;  // byte offset in `file`; -1 when none
  std::string message;
  std::string ToString() const;
};

struct VerifyReport {
  uint64_t events = 0;
  uint64_t segments = 0;
  uint64_t checkpoints = 0;
  uint64_t covered = 0;  // events covered by the last valid checkpoint
  std::string key_id;
  bool key_from_dir = false;
  std::vector<VerifyProblem> problems;  // in log order; the first is the first bad place
  bool ok() const { return problems.empty(); }
};

// Verifies the log in options.dir. The StatusOr is an error only when verification could not
// start (directory unreadable, public key not an Ed25519 PEM, trusted checkpoint unparsable);
// every finding about the log itself is in the report.
absl::StatusOr<VerifyReport> VerifyAuditLog(const VerifyOptions& options);
// As above with the key already parsed (options.public_key_pem is ignored): for callers that
// verify many copies with one key (OpenSSL's PEM decoding costs more than verifying a small log).
absl::StatusOr<VerifyReport> VerifyAuditLog(const VerifyOptions& options,
                                            const AuditVerifyingKey& key);

}  // namespace warden::audit
