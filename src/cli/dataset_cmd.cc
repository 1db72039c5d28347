// `gpuwarden dataset ...` and `gpuwarden key ...`: the encrypted vault over
// /api/v1/tenants/{tenant}/datasets and /keys (issue 5).
//
// Transfers keep memory constant whatever the size: `put` streams the file (from the offset the
// server holds) as one PUT body into a resumable upload, through libcurl's read callback; `get`
// streams the whole object (one GET) into OUT.part through the write callback, checks size and
// SHA-256 at the end and only then renames it to OUT (a failed or tampered download leaves no
// plaintext file behind). An interrupted `put`
// is resumed by running the same command again: the upload id is remembered in
// the CLI config dir (uploads/) keyed by server, tenant, name and file, and the server says which
// offset it holds durably.
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include "cli/cli_internal.h"
#include "cli/transfer.h"
#include "common/encoding.h"
#include "common/strings.h"
#include "http/client.h"

namespace warden::cli::internal {
namespace {

using common::Json;
using common::StrCat;

constexpr size_t kPiece = 1 << 20;  // local read size while hashing a resumed upload's prefix

std::string QueryEscape(std::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~' || ch == '/') {
      out.push_back(static_cast<char>(ch));
    } else {
      out += {'%', kHex[ch >> 4], kHex[ch & 15]};
    }
  }
  return out;
}

// Streaming SHA-256 (OpenSSL EVP).
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) { EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr); }
  void Update(std::string_view d) { EVP_DigestUpdate(ctx_.get(), d.data(), d.size()); }
  std::string Hex() {
    unsigned char md[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_.get(), md, &n);
    return common::HexEncode(std::string_view(reinterpret_cast<char*>(md), n));
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

// Where interrupted uploads are remembered (next to the CLI's credentials).
std::string UploadStateDir() {
  if (const char* d = std::getenv("GPUWARDEN_CONFIG_DIR"); d && *d) return StrCat(d, "/uploads");
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x && *x) return StrCat(x, "/gpuwarden/uploads");
  const char* home = std::getenv("HOME");
  return StrCat(home ? home : ".", "/.config/gpuwarden/uploads");
}

std::string ResumeFile(const Session& s, const std::string& tenant, const std::string& name,
                       const std::string& file) {
  std::string abs = std::filesystem::absolute(file).string();
  return StrCat(UploadStateDir(), "/", common::Sha256Hex(StrCat(s.url, "\n", tenant, "\n", name, "\n", abs)).substr(0, 32),
                ".json");
}

void Put(const DatasetCommands& c, const Session& s) {
  std::string tenant = c.tenant.empty() ? s.tenant : c.tenant;
  if (tenant.empty()) Fail("--tenant is required (your account has no home tenant)", 2);
  std::string prefix = StrCat("/api/v1/tenants/", tenant, "/datasets");
  std::ifstream in(c.file, std::ios::binary);
  if (!in) Fail(StrCat("cannot read ", c.file), 2);
  struct stat st {};
  if (::stat(c.file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) Fail(StrCat(c.file, " is not a regular file"), 2);
  const auto size = static_cast<uint64_t>(st.st_size);
  Transfer t(s);

  // Resume an earlier upload of the same file when its state says so and the server still has it.
  std::string state_path = ResumeFile(s, tenant, c.name, c.file);
  std::string upload_id;
  uint64_t offset = 0;
  {
    std::ifstream sf(state_path);
    if (sf) {
      std::string text((std::istreambuf_iterator<char>(sf)), std::istreambuf_iterator<char>());
      auto j = common::ParseJsonStrict(text);
      if (j.ok() && j->is_object() && j->value("size", uint64_t{0}) == size &&
          j->value("mtime", int64_t{0}) == static_cast<int64_t>(st.st_mtime)) {
        std::string id = j->value("upload_id", "");
        auto r = t.Do("GET", StrCat(prefix, "/uploads/", id), "", nullptr);
        if (r.status == 200) {
          auto u = common::ParseJsonStrict(r.body);
          if (u.ok()) {
            upload_id = id;
            offset = u->value("received", uint64_t{0});
            std::cerr << "resuming upload " << id << " at " << HumanBytes(static_cast<double>(offset))
                      << "\n";
          }
        }
      }
    }
  }
  if (upload_id.empty()) {
    Json body{{"name", c.name}};
    Json u = t.DoJson("POST", StrCat(prefix, "/uploads"), body);
    upload_id = u.value("upload_id", "");
    std::filesystem::create_directories(UploadStateDir());
    std::ofstream sf(state_path, std::ios::trunc);
    sf << Json{{"upload_id", upload_id}, {"size", size}, {"mtime", static_cast<int64_t>(st.st_mtime)}}.dump();
  }

  // The server answers 409 "expects offset" when `received` moved since it was read: the bytes
  // a killed earlier run left in flight can still land after the status was read. Read the
  // status again and go on from there (the server stops that earlier request's appends).
  std::unique_ptr<Sha256> sha;
  Progress bar(c.progress || ::isatty(STDERR_FILENO), size, offset);
  for (int attempt = 1;; ++attempt) {
    sha = std::make_unique<Sha256>();
    in.clear();
    in.seekg(0);
    std::string buf(kPiece, '\0');
    // The prefix the server already holds still goes into the hash (read locally, not re-sent).
    uint64_t hashed = 0;
    while (hashed < offset) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(kPiece, offset - hashed));
      in.read(buf.data(), static_cast<std::streamsize>(want));
      if (static_cast<size_t>(in.gcount()) != want) Fail(StrCat(c.file, " changed while uploading"));
      sha->Update(std::string_view(buf.data(), want));
      hashed += want;
    }
    if (offset >= size) break;
    // The rest of the file as one streamed body: curl pulls it from here as the server takes it.
    uint64_t sent = offset;
    http::StreamTransfer tr;
    tr.size = static_cast<int64_t>(size - offset);
    tr.source = [&](char* out, size_t n) -> absl::StatusOr<size_t> {
      size_t want = static_cast<size_t>(std::min<uint64_t>(n, size - sent));
      if (want == 0) return size_t{0};
      in.read(out, static_cast<std::streamsize>(want));
      auto got = static_cast<size_t>(in.gcount());
      if (got == 0) return absl::DataLossError(StrCat(c.file, " changed while uploading"));
      sha->Update(std::string_view(out, got));
      sent += got;
      bar.Update(sent);
      return got;
    };
    auto r = t.Stream("PUT", StrCat(prefix, "/uploads/", upload_id, "?offset=", offset), tr,
                      "application/octet-stream");
    if (!r.ok()) {
      Fail(StrCat(r.status().message(), " (run the same command again to resume the upload)"), 3);
    }
    if (r->status == 409 && attempt < 3 &&
        ErrorOf(*r).find("expects offset") != std::string::npos) {
      Json u = t.DoJson("GET", StrCat(prefix, "/uploads/", upload_id), nullptr);
      offset = u.value("received", uint64_t{0});
      std::cerr << "resuming upload " << upload_id << " at "
                << HumanBytes(static_cast<double>(offset)) << "\n";
      continue;
    }
    if (r->status >= 400) Fail(ErrorOf(*r));
    offset = sent;
    break;
  }
  bar.Update(offset, true);
  Json info = t.DoJson("POST", StrCat(prefix, "/uploads/", upload_id, "/commit"),
                       Json{{"sha256", sha->Hex()}});
  std::filesystem::remove(state_path);
  if (c.output == "json") {
    std::cout << info.dump(2) << "\n";
  } else {
    std::cout << "stored " << info.value("name", "") << " version " << info.value("version", 0)
              << " (" << info.value("size", uint64_t{0}) << " bytes, sha256 "
              << info.value("sha256", "") << ")\n";
  }
}

void Get(const DatasetCommands& c, const Session& s) {
  std::string tenant = c.tenant.empty() ? s.tenant : c.tenant;
  if (tenant.empty()) Fail("--tenant is required (your account has no home tenant)", 2);
  std::string prefix = StrCat("/api/v1/tenants/", tenant, "/datasets");
  Transfer t(s);
  Json info = t.DoJson("GET",
                       StrCat(prefix, "/object?name=", QueryEscape(c.name),
                              c.version ? StrCat("&version=", c.version) : std::string()),
                       nullptr);
  const uint64_t size = info.value("size", uint64_t{0});
  const uint64_t version = info.value("version", uint64_t{0});
  const std::string expect = info.value("sha256", "");
  std::string part = StrCat(c.out, ".part");
  std::ofstream out(part, std::ios::binary | std::ios::trunc);
  if (!out) Fail(StrCat("cannot write ", part), 2);
  auto fail = [&](const std::string& msg) {
    out.close();
    std::filesystem::remove(part);
    Fail(msg);
  };
  Sha256 sha;
  uint64_t done = 0;
  Progress bar(c.progress || ::isatty(STDERR_FILENO), size, 0);
  // The whole version as one streamed body, written to OUT.part as it arrives.
  http::StreamTransfer tr;
  tr.sink = [&](std::string_view piece) -> absl::Status {
    if (done + piece.size() > size) {
      return absl::DataLossError("server sent more bytes than the object holds");
    }
    sha.Update(piece);
    out.write(piece.data(), static_cast<std::streamsize>(piece.size()));
    if (!out) return absl::UnavailableError(StrCat("cannot write ", part));
    done += piece.size();
    bar.Update(done);
    return absl::OkStatus();
  };
  auto r = t.Stream("GET",
                    StrCat(prefix, "/content?name=", QueryEscape(c.name), "&version=", version),
                    tr, nullptr);
  if (!r.ok()) fail(StrCat("download failed: ", r.status().message()));
  if (r->status >= 400) fail(ErrorOf(*r));
  bar.Update(done, true);
  out.close();
  if (done != size || sha.Hex() != expect) {
    fail(StrCat("integrity check failed: got ", done, " bytes with sha256 ", sha.Hex(),
                ", expected ", size, " bytes with sha256 ", expect));
  }
  std::filesystem::rename(part, c.out);
  if (c.output == "json") {
    std::cout << info.dump(2) << "\n";
  } else {
    std::cout << "wrote " << c.out << " (" << size << " bytes, sha256 " << expect << ")\n";
  }
}

void PrintObjects(const Json& items) {
  std::printf("%-40s %8s %14s %-12s %s\n", "NAME", "VERSION", "SIZE", "KEY", "SHA256");
  for (const auto& o : items) {
    std::printf("%-40s %8llu %14llu v%-11u %s\n", o.value("name", "").c_str(),
                static_cast<unsigned long long>(o.value("version", uint64_t{0})),
                static_cast<unsigned long long>(o.value("size", uint64_t{0})),
                o.value("kek_version", 0u), o.value("sha256", "").substr(0, 16).c_str());
  }
}

std::string ReadDocument(const std::string& file) {
  std::string text;
  if (file == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    std::ifstream in(file, std::ios::binary);
    if (!in) Fail(StrCat("cannot read ", file), 2);
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  return text;
}

}  // namespace

void AddDatasetCommands(CLI::App& app, DatasetCommands& c) {
  auto* ds = app.add_subcommand("dataset", "encrypted datasets and checkpoints (the vault)")
                 ->require_subcommand(1);
  auto tenant = [&](CLI::App* cmd) {
    cmd->add_option("--tenant", c.tenant, "tenant (default: your own tenant)");
  };
  c.put = ds->add_subcommand("put", "upload FILE as a new version of NAME (resumable: rerun)");
  c.put->add_option("name", c.name, "object name, e.g. run1/ckpt/shard-0")->required();
  c.put->add_option("file", c.file, "file to upload")->required();
  c.put->add_flag("--progress", c.progress, "show progress even when stderr is not a terminal");
  tenant(c.put);
  c.get = ds->add_subcommand("get", "download NAME to OUT (verified before OUT appears)");
  c.get->add_option("name", c.name, "object name")->required();
  c.get->add_option("out", c.out, "output file")->required();
  c.get->add_option("--object-version", c.version, "object version (default: latest)");
  c.get->add_flag("--progress", c.progress, "show progress even when stderr is not a terminal");
  tenant(c.get);
  c.ls = ds->add_subcommand("ls", "list objects (latest versions)");
  c.ls->add_option("prefix", c.name, "name prefix");
  tenant(c.ls);
  c.show = ds->add_subcommand("show", "show an object and its versions");
  c.show->add_option("name", c.name, "object name")->required();
  tenant(c.show);
  c.rm = ds->add_subcommand("rm", "delete every version of an object");
  c.rm->add_option("name", c.name, "object name")->required();
  tenant(c.rm);
  c.verify = ds->add_subcommand("verify", "decrypt and check an object on the server");
  c.verify->add_option("name", c.name, "object name")->required();
  c.verify->add_option("--object-version", c.version, "object version (default: latest)");
  tenant(c.verify);
  auto* policy = ds->add_subcommand("policy", "data access policies")->require_subcommand(1);
  c.policy_get = policy->add_subcommand("get", "show the tenant's data access policies");
  tenant(c.policy_get);
  c.policy_set = policy->add_subcommand("set", "store policy document NAME from FILE (- = stdin)");
  c.policy_set->add_option("name", c.name, "policy name")->required();
  c.policy_set->add_option("file", c.file, "policy document (JSON)")->required();
  tenant(c.policy_set);
  c.policy_rm = policy->add_subcommand("rm", "delete policy document NAME");
  c.policy_rm->add_option("name", c.name, "policy name")->required();
  tenant(c.policy_rm);
  AddDatasetShareCommands(*ds, c.shares);  // dataset_share_cmd.cc

  auto* key = app.add_subcommand("key", "tenant encryption keys")->require_subcommand(1);
  c.key_status = key->add_subcommand("status", "key versions, minimum version, usage counters");
  tenant(c.key_status);
  c.key_rotate = key->add_subcommand("rotate", "new key version; rewraps every data key");
  c.key_rotate->add_flag("--reencrypt", c.reencrypt, "also re-encrypt content under new data keys");
  tenant(c.key_rotate);
}

bool RunDatasetCommand(DatasetCommands& c, const Session& s, const std::string& output) {
  c.output = output;
  auto prefix = [&] {
    std::string tenant = c.tenant.empty() ? s.tenant : c.tenant;
    if (tenant.empty()) Fail("--tenant is required (your account has no home tenant)", 2);
    return StrCat("/api/v1/tenants/", tenant);
  };
  auto print = [&](const Json& j) { std::cout << j.dump(2) << "\n"; };
  if (RunDatasetShareCommand(c.shares, s, output)) return true;  // dataset_share_cmd.cc
  if (c.put->parsed()) {
    Put(c, s);
  } else if (c.get->parsed()) {
    Get(c, s);
  } else if (c.ls->parsed()) {
    Json j = Request(s, "GET", StrCat(prefix(), "/datasets?prefix=", QueryEscape(c.name)));
    if (output == "json") {
      print(j);
    } else {
      PrintObjects(j["items"]);
    }
  } else if (c.show->parsed()) {
    print(Request(s, "GET", StrCat(prefix(), "/datasets/object?name=", QueryEscape(c.name))));
  } else if (c.rm->parsed()) {
    Request(s, "DELETE", StrCat(prefix(), "/datasets/object?name=", QueryEscape(c.name)));
    std::cout << "deleted " << c.name << "\n";
  } else if (c.verify->parsed()) {
    Json j = Request(s, "POST",
                     StrCat(prefix(), "/datasets/verify?name=", QueryEscape(c.name),
                            c.version ? StrCat("&version=", c.version) : std::string()));
    if (output == "json") {
      print(j);
    } else if (j.value("verified", false)) {
      std::cout << "ok: " << c.name << " version " << j.value("version", 0) << " ("
                << j.value("bytes_checked", uint64_t{0}) << " bytes) authenticates and matches sha256 "
                << j.value("sha256", "") << "\n";
    } else {
      Fail(StrCat("FAILED: ", c.name, ": ", j.value("error", "integrity check failed")), 1);
    }
  } else if (c.policy_get->parsed()) {
    print(Request(s, "GET", StrCat(prefix(), "/datasets/policies")));
  } else if (c.policy_set->parsed()) {
    std::string doc = ReadDocument(c.file);
    auto j = common::ParseJsonStrict(doc);
    if (!j.ok()) Fail(StrCat(c.file, ": ", std::string(j.status().message())), 2);
    Request(s, "PUT", StrCat(prefix(), "/datasets/policies/", c.name), *j);
    std::cout << "stored data policy " << c.name << "\n";
  } else if (c.policy_rm->parsed()) {
    Request(s, "DELETE", StrCat(prefix(), "/datasets/policies/", c.name));
    std::cout << "deleted data policy " << c.name << "\n";
  } else if (c.key_status->parsed()) {
    print(Request(s, "GET", StrCat(prefix(), "/keys")));
  } else if (c.key_rotate->parsed()) {
    Json j = Request(s, "POST", StrCat(prefix(), "/keys/rotate"), Json{{"reencrypt", c.reencrypt}});
    if (output == "json") {
      print(j);
    } else {
      std::cout << "key version " << j.value("new_version", 0) << ": rewrapped "
                << j.value("rewrapped", uint64_t{0}) << " object versions, re-encrypted "
                << j.value("reencrypted", uint64_t{0}) << "\n";
    }
  } else {
    return false;
  }
  return true;
}

}  // namespace warden::cli::internal
