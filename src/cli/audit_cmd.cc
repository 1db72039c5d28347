#include "cli/audit_cmd.h"

#include <fstream>
#include <iostream>
#include <sstream>

#include "audit/audit.h"
#include "audit/checkpoint.h"
#include "audit/merkle.h"
#include "audit/verify.h"
#include "common/encoding.h"
#include "common/strings.h"

namespace warden::cli {
namespace {

using common::Json;
using common::StrCat;

bool ReadFileTo(const std::string& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return true;
}

// Hashes in API replies are hex; anything else is a malformed reply.
bool HashFromHex(const Json& j, audit::MerkleHash& out) {
  if (!j.is_string()) return false;
  auto bytes = common::HexDecode(j.get<std::string>());
  if (!bytes) return false;
  auto h = audit::MerkleHashFromBytes(*bytes);
  if (!h.ok()) return false;
  out = *h;
  return true;
}

bool HashesFromHex(const Json& j, std::vector<audit::MerkleHash>& out) {
  if (!j.is_array()) return false;
  for (const auto& e : j) {
    audit::MerkleHash h;
    if (!HashFromHex(e, h)) return false;
    out.push_back(h);
  }
  return true;
}

void AppendParam(std::string& path, const char* key, const std::string& value) {
  if (value.empty()) return;
  path += path.find('?') == std::string::npos ? "?" : "&";
  path += key;
  path += "=";
  for (unsigned char c : value) {  // percent-encode all but unreserved characters
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == ':' || c == '/') {
      path.push_back(static_cast<char>(c));
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";
      path += '%';
      path += kHex[c >> 4];
      path += kHex[c & 15];
    }
  }
}

// Checks a checkpoint (as the API returns it) against the server's audit public key.
absl::StatusOr<audit::Checkpoint> CheckedCheckpoint(const AuditRequestFn& request, const Json& cp) {
  if (!cp.is_object() || !cp.contains("text") || !cp["text"].is_string()) {
    return absl::DataLossError("the server sent no checkpoint text");
  }
  auto parsed = audit::ParseCheckpoint(cp["text"].get<std::string>());
  if (!parsed.ok()) return parsed.status();
  Json key = request("GET", "/api/v1/audit/pubkey");
  absl::Status s = audit::VerifyCheckpoint(*parsed, key.value("public_key", ""));
  if (!s.ok()) return s;
  return *parsed;
}

}  // namespace

AuditCommands::AuditCommands(CLI::App& audit) {
  verify_ = audit.add_subcommand(
      "verify", "verify a copy of the audit log offline (exit 0 only when everything verifies)");
  verify_->add_option("dir", dir_, "the log directory (DATA_DIR/audit or a copy of it)")->required();
  verify_->add_option("--pubkey", pubkey_file_,
                      "the audit public key (PEM) from a trusted source; default DIR/audit.pub");
  verify_->add_flag("--allow-unsigned-tail", allow_tail_,
                    "accept events after the last checkpoint (a live or crashed log)");
  verify_->add_option("--checkpoint", trusted_file_,
                      "a checkpoint kept from earlier (`audit checkpoint` output): must be in the chain");

  archive_ = audit.add_subcommand(
      "archive", "move whole old segments into DIR/archive (never rewritten; still verified)");
  archive_->add_option("dir", dir_, "the log directory (DATA_DIR/audit)")->required();
  archive_->add_option("--before", before_, "archive segments whose events are all below this seq")
      ->required();

  pubkey_ = audit.add_subcommand("pubkey", "print the audit public key (PEM)");
  pubkey_->add_option("--data-dir", data_dir_,
                      "read it from this server data dir instead of asking the server");

  checkpoint_ = audit.add_subcommand("checkpoint", "print the latest signed checkpoint (keep it to "
                                                   "detect later truncation: verify --checkpoint)");
  checkpoint_->add_option("--seq", seq_, "a given checkpoint instead of the latest");

  auto filters = [this](CLI::App* cmd) {
    cmd->add_option("--from-ms", from_, "events at or after this Unix time in ms");
    cmd->add_option("--to-ms", to_, "events before this Unix time in ms");
    cmd->add_option("--actor", actor_, "user name or id");
    cmd->add_option("--tenant-filter", tenant_filter_, "tenant name (cluster scope only)");
    cmd->add_option("--action", action_, "action, e.g. users:create");
    cmd->add_option("--resource", resource_, "resource path prefix");
    cmd->add_option("--outcome", decision_, "allow or deny");
    cmd->add_option("--status", status_, "HTTP status");
    cmd->add_option("--after", after_, "paging cursor: events after this seq");
    cmd->add_option("--limit", limit_, "events per page (1..10000, default 100)");
  };
  query_ = audit.add_subcommand("query", "search the audit log");
  filters(query_);
  export_ = audit.add_subcommand("export", "export events as JSON lines with inclusion proofs");
  filters(export_);
  export_->add_flag("--all", all_pages_, "follow the paging cursor to the end");

  proof_ = audit.add_subcommand("proof", "inclusion proof of an event, checked before printing");
  proof_->add_option("seq", seq_, "event seq")->required();
  proof_->add_option("--tree-size", tree_size_, "tree size (default: the latest checkpoint's)");

  consistency_ = audit.add_subcommand(
      "consistency", "consistency proof between two tree sizes, checked before printing");
  consistency_->add_option("from", size1_, "earlier tree size")->required();
  consistency_->add_option("to", size2_, "later tree size")->required();
}

std::vector<CLI::App*> AuditCommands::Scoped() const { return {query_, export_, proof_}; }

bool AuditCommands::OfflineParsed() const {
  return verify_->parsed() || archive_->parsed() || (pubkey_->parsed() && !data_dir_.empty());
}

int AuditCommands::RunOffline() const {
  if (archive_->parsed()) {
    auto moved = audit::ArchiveAuditSegments(dir_, before_);
    if (!moved.ok()) {
      std::cerr << "gpuwarden: " << moved.status().message() << "\n";
      return 1;
    }
    std::cout << "archived " << *moved << " segment(s) into " << dir_ << "/archive\n";
    return 0;
  }
  if (pubkey_->parsed()) {
    // LoadOrCreate would create a key in a data dir that has none: refuse that first.
    std::string path = StrCat(data_dir_, "/audit/audit.key");
    if (!std::ifstream(path)) {
      std::cerr << "gpuwarden: no readable audit key at " << path << "\n";
      return 1;
    }
    auto key = audit::AuditSigningKey::LoadOrCreate(path);
    if (!key.ok()) {
      std::cerr << "gpuwarden: " << key.status().message() << "\n";
      return 1;
    }
    std::cout << key->PublicKeyPem();
    return 0;
  }
  audit::VerifyOptions opts;
  opts.dir = dir_;
  opts.allow_unsigned_tail = allow_tail_;
  if (!pubkey_file_.empty()) {
    std::string pem;
    if (!ReadFileTo(pubkey_file_, pem)) {
      std::cerr << "gpuwarden: cannot read public key file " << pubkey_file_ << "\n";
      return 2;
    }
    opts.public_key_pem = pem;
  }
  if (!trusted_file_.empty()) {
    std::string text;
    if (!ReadFileTo(trusted_file_, text)) {
      std::cerr << "gpuwarden: cannot read checkpoint file " << trusted_file_ << "\n";
      return 2;
    }
    opts.trusted_checkpoint = text;
  }
  auto report = audit::VerifyAuditLog(opts);
  if (!report.ok()) {
    std::cerr << "gpuwarden: " << report.status().message() << "\n";
    return 2;
  }
  if (report->key_from_dir) {
    std::cerr << "warning: no --pubkey given; using " << dir_
              << "/audit.pub, which proves nothing against whoever could rewrite the log\n";
  }
  if (report->ok()) {
    std::cout << "OK: " << report->events << " events in " << report->segments << " segments, "
              << report->checkpoints << " checkpoints, key " << report->key_id << "; "
              << report->covered << " events covered by the last checkpoint\n";
    return 0;
  }
  std::cout << "FAILED: " << report->problems.size() << " problem(s) in " << dir_
            << " (key " << report->key_id << ")\n";
  size_t shown = 0;
  for (const auto& p : report->problems) {
    if (++shown > 20) {
      std::cout << "  ... and " << report->problems.size() - 20 << " more\n";
      break;
    }
    std::cout << "  " << p.ToString() << "\n";
  }
  return 1;
}

bool AuditCommands::OnlineParsed() const {
  return (pubkey_->parsed() && data_dir_.empty()) || checkpoint_->parsed() || query_->parsed() ||
         export_->parsed() || proof_->parsed() || consistency_->parsed();
}

int AuditCommands::RunOnline(const AuditRequestFn& request, const std::string& prefix,
                             const std::string& output) const {
  if (pubkey_->parsed()) {
    Json j = request("GET", "/api/v1/audit/pubkey");
    std::cout << j.value("public_key", "");
    return 0;
  }
  if (checkpoint_->parsed()) {
    std::string path = "/api/v1/audit/checkpoint";
    if (checkpoint_->count("--seq") > 0) path += StrCat("?seq=", seq_);
    Json j = request("GET", path);
    auto cp = CheckedCheckpoint(request, j);
    if (!cp.ok()) {
      std::cerr << "gpuwarden: checkpoint from the server does not verify: " << cp.status().message() << "\n";
      return 1;
    }
    if (output == "json") {
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << cp->Encode();
    }
    return 0;
  }
  if (query_->parsed() || export_->parsed()) {
    const bool is_export = export_->parsed();
    std::string base = StrCat(prefix, "/audit/events");
    auto build = [&](int64_t after) {
      std::string path = base;
      AppendParam(path, "from_ms", from_);
      AppendParam(path, "to_ms", to_);
      AppendParam(path, "actor", actor_);
      AppendParam(path, "tenant", tenant_filter_);
      AppendParam(path, "action", action_);
      AppendParam(path, "resource", resource_);
      AppendParam(path, "outcome", decision_);
      if (status_ != 0) AppendParam(path, "status", std::to_string(status_));
      if (after >= 0) AppendParam(path, "after", std::to_string(after));
      AppendParam(path, "limit", std::to_string(limit_));
      return path;
    };
    if (!is_export) {
      Json j = request("GET", build(after_));
      if (output == "json") {
        std::cout << j.dump(2) << "\n";
        return 0;
      }
      std::cout << "SEQ  TIME_MS  ACTOR  TENANT  ACTION  OUTCOME  STATUS  BYTES  RESOURCE\n";
      for (const auto& e : j["items"]) {
        std::cout << e.value("seq", int64_t{0}) << "  " << e.value("time_ms", int64_t{0}) << "  "
                  << e.value("actor_name", "-") << "  " << e.value("tenant", "") << "  "
                  << e.value("action", "") << "  " << e.value("decision", "") << "  "
                  << e.value("status", 0) << "  " << e.value("bytes", int64_t{0}) << "  "
                  << e.value("resource", "") << "\n";
      }
      if (!j["next_after"].is_null()) {
        std::cout << "(more: --after " << j["next_after"].get<int64_t>() << ")\n";
      }
      return 0;
    }
    // Export: the checkpoint and public key first, then each event with its inclusion proof
    // against that checkpoint, fetched per event and checked here.
    Json key = request("GET", "/api/v1/audit/pubkey");
    Json cpj = request("GET", "/api/v1/audit/checkpoint");
    auto cp = CheckedCheckpoint(request, cpj);
    if (!cp.ok()) {
      std::cerr << "gpuwarden: checkpoint does not verify: " << cp.status().message() << "\n";
      return 1;
    }
    std::cout << Json{{"format", "gpuwarden-audit-export/v1"},
                      {"public_key", key.value("public_key", "")},
                      {"checkpoint", cpj}}.dump()
              << "\n";
    int64_t after = after_;
    while (true) {
      Json page = request("GET", build(after));
      for (const auto& e : page["items"]) {
        Json row{{"event", e}};
        int64_t seq = e.value("seq", int64_t{-1});
        if (seq >= 0 && static_cast<uint64_t>(seq) < cp->tree_size) {
          Json p = request("GET", StrCat(prefix, "/audit/proof/inclusion?seq=", seq,
                                         "&tree_size=", cp->tree_size));
          audit::MerkleHash leaf;
          std::vector<audit::MerkleHash> proof;
          std::string line = p.value("line", "");
          if (!HashesFromHex(p["proof"], proof) ||
              !audit::VerifyInclusion(audit::LeafHash(line), static_cast<uint64_t>(seq),
                                      cp->tree_size, proof, cp->root)
                   .ok() ||
              !HashFromHex(p["leaf_hash"], leaf)) {
            std::cerr << "gpuwarden: inclusion proof of event " << seq
                      << " does not verify against checkpoint " << cp->seq << "\n";
            return 1;
          }
          row["line"] = line;
          row["tree_size"] = cp->tree_size;
          row["leaf_hash"] = p["leaf_hash"];
          row["proof"] = p["proof"];
        }
        std::cout << row.dump(-1, ' ', false, Json::error_handler_t::replace) << "\n";
      }
      if (!all_pages_ || page["next_after"].is_null()) break;
      after = page["next_after"].get<int64_t>();
    }
    return 0;
  }
  if (proof_->parsed()) {
    std::string path = StrCat(prefix, "/audit/proof/inclusion?seq=", seq_);
    if (tree_size_ > 0) path += StrCat("&tree_size=", tree_size_);
    Json j = request("GET", path);
    audit::MerkleHash root;
    std::vector<audit::MerkleHash> proof;
    std::string line = j.value("line", "");
    uint64_t size = j.value("tree_size", uint64_t{0});
    if (!HashFromHex(j["root"], root) || !HashesFromHex(j["proof"], proof)) {
      std::cerr << "gpuwarden: malformed proof from the server\n";
      return 1;
    }
    absl::Status s = audit::VerifyInclusion(audit::LeafHash(line), seq_, size, proof, root);
    std::string verdict = s.ok() ? "proof verifies against the root" : std::string(s.message());
    if (s.ok() && j.contains("checkpoint")) {
      auto cp = CheckedCheckpoint(request, j["checkpoint"]);
      if (!cp.ok() || cp->root != root || cp->tree_size != size) {
        s = absl::DataLossError("the checkpoint does not verify or does not sign this root");
        verdict = std::string(s.message());
      } else {
        verdict = StrCat("proof verifies against signed checkpoint seq ", cp->seq);
      }
    }
    if (output == "json") {
      j["verified"] = s.ok();
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << "event " << seq_ << " in tree of " << size << ": " << verdict << "\n"
                << line << "\n";
    }
    return s.ok() ? 0 : 1;
  }
  if (consistency_->parsed()) {
    Json j = request("GET", StrCat("/api/v1/audit/proof/consistency?from=", size1_, "&to=", size2_));
    audit::MerkleHash r1, r2;
    std::vector<audit::MerkleHash> proof;
    if (!HashFromHex(j["root1"], r1) || !HashFromHex(j["root2"], r2) ||
        !HashesFromHex(j["proof"], proof)) {
      std::cerr << "gpuwarden: malformed proof from the server\n";
      return 1;
    }
    absl::Status s = audit::VerifyConsistency(size1_, size2_, r1, r2, proof);
    if (output == "json") {
      j["verified"] = s.ok();
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << "tree " << size2_ << " extends tree " << size1_ << ": "
                << (s.ok() ? "proof verifies" : std::string(s.message())) << "\n";
    }
    return s.ok() ? 0 : 1;
  }
  return 2;
}

}  // namespace warden::cli
