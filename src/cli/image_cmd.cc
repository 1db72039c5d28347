// `gpuwarden image ...`: per-tenant container images over /api/v1/tenants/{tenant}/images.
// `import` streams the archive file as one POST body (constant memory whatever its size), with a
// progress line on stderr; the server verifies every digest before the image exists.
#include "cli/image_cmd.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "cli/transfer.h"
#include "common/strings.h"
#include "http/client.h"

namespace warden::cli::internal {
namespace {

using common::Json;
using common::StrCat;

std::string Tenant(const ImageCommands& c, const Session& s) {
  std::string t = c.tenant.empty() ? s.tenant : c.tenant;
  if (t.empty()) Fail("--tenant is required (your account has no home tenant)", 2);
  return t;
}

Json Import(const ImageCommands& c, const Session& s) {
  int fd = ::open(c.file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail(StrCat("cannot open ", c.file, ": ", std::strerror(errno)), 2);
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    Fail(StrCat(c.file, " is not a regular file (an OCI image layout tar, e.g. from "
                        "`docker save` or `skopeo copy ... oci-archive:FILE`)"), 2);
  }
  const uint64_t total = static_cast<uint64_t>(st.st_size);
  Transfer t(s, absl::Minutes(10));  // the server verifies and extracts before it answers
  Progress bar(c.progress || ::isatty(STDERR_FILENO), total, 0);
  uint64_t sent = 0;
  http::StreamTransfer body;
  body.size = static_cast<int64_t>(total);
  body.source = [&](char* buf, size_t n) -> absl::StatusOr<size_t> {
    for (;;) {
      ssize_t got = ::read(fd, buf, n);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return absl::InternalError(StrCat("read ", c.file, ": ", std::strerror(errno)));
      sent += static_cast<uint64_t>(got);
      bar.Update(sent);
      return static_cast<size_t>(got);
    }
  };
  auto r = t.Stream("POST", StrCat("/api/v1/tenants/", Tenant(c, s), "/images"), body,
                    "application/x-tar", /*expect_continue=*/true);
  ::close(fd);
  bar.Update(sent, true);
  if (!r.ok()) Fail(std::string(r.status().message()), 3);
  if (r->status >= 400) Fail(StrCat("image import refused: ", ErrorOf(*r)));
  auto j = common::ParseJsonStrict(r->body);
  if (!j.ok()) Fail("server sent a malformed reply");
  return *j;
}

void PrintList(const Json& items) {
  std::printf("%-71s %10s  %-20s %s\n", "DIGEST", "SIZE", "IMPORTED", "BY");
  for (const Json& i : items) {
    char when[32] = "-";
    time_t t = static_cast<time_t>(i.value("imported_at", int64_t{0}));
    struct tm tm;
    if (t > 0 && gmtime_r(&t, &tm) != nullptr) std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%SZ", &tm);
    std::printf("%-71s %10s  %-20s %s\n", i.value("digest", "").c_str(),
                HumanBytes(static_cast<double>(i.value("size", uint64_t{0}))).c_str(), when,
                i.value("imported_by", "").c_str());
  }
}

}  // namespace

void AddImageCommands(CLI::App& app, ImageCommands& c) {
  auto* img = app.add_subcommand("image", "container images of a tenant (OCI image layouts)")
                  ->require_subcommand(1);
  auto tenant = [&](CLI::App* cmd) { cmd->add_option("--tenant", c.tenant, "tenant (default: your own)"); };
  c.import = img->add_subcommand("import", "upload FILE (an OCI image layout tar: `docker save`, "
                                           "`skopeo copy ... oci-archive:FILE`); prints its digest");
  c.import->add_option("file", c.file, "image archive")->required();
  c.import->add_flag("--progress", c.progress, "show progress even when stderr is not a terminal");
  tenant(c.import);
  c.ls = img->add_subcommand("ls", "list the tenant's images");
  tenant(c.ls);
  c.show = img->add_subcommand("show", "show one image: size, importer, config env/entrypoint/cmd");
  c.show->add_option("digest", c.digest, "sha256:...")->required();
  tenant(c.show);
  c.rm = img->add_subcommand("rm", "delete an image (jobs already placed may fail to start)");
  c.rm->add_option("digest", c.digest, "sha256:...")->required();
  tenant(c.rm);
}

bool RunImageCommand(ImageCommands& c, const Session& s, const std::string& output) {
  if (c.import == nullptr) return false;
  auto prefix = [&] { return StrCat("/api/v1/tenants/", Tenant(c, s), "/images"); };
  if (c.import->parsed()) {
    Json j = Import(c, s);
    if (output == "json") {
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << "imported " << j.value("digest", "") << " ("
                << HumanBytes(static_cast<double>(j.value("size", uint64_t{0}))) << ") for tenant "
                << j.value("tenant", "") << "\n";
    }
  } else if (c.ls->parsed()) {
    Json j = Request(s, "GET", prefix());
    if (output == "json") {
      std::cout << j.dump(2) << "\n";
    } else {
      PrintList(j.value("items", Json::array()));
    }
  } else if (c.show->parsed()) {
    std::cout << Request(s, "GET", StrCat(prefix(), "/", c.digest)).dump(2) << "\n";
  } else if (c.rm->parsed()) {
    Request(s, "DELETE", StrCat(prefix(), "/", c.digest));
    std::cout << "deleted " << c.digest << "\n";
  } else {
    return false;
  }
  return true;
}

}  // namespace warden::cli::internal
