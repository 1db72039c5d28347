// `gpuwarden node ...`: join tokens and node administration over /api/v1/nodes.
#include "cli/node_cmd.h"

#include <ctime>
#include <iostream>

#include "common/strings.h"

namespace warden::cli {
namespace {

using common::Json;
using common::StrCat;

std::string Ago(int64_t unix) {
  if (unix <= 0) return "-";
  int64_t d = static_cast<int64_t>(std::time(nullptr)) - unix;
  if (d < 0) d = 0;
  if (d < 120) return StrCat(d, "s ago");
  if (d < 7200) return StrCat(d / 60, "m ago");
  if (d < 2 * 86400) return StrCat(d / 3600, "h ago");
  return StrCat(d / 86400, "d ago");
}

std::string Str(const Json& j, const char* key) {
  if (!j.contains(key)) return "-";
  const Json& v = j[key];
  if (v.is_string()) return v.get<std::string>().empty() ? "-" : v.get<std::string>();
  return v.dump();
}

std::string LabelsText(const Json& labels) {
  std::string out;
  if (!labels.is_object()) return "-";
  for (const auto& [k, v] : labels.items()) {
    out += StrCat(out.empty() ? "" : ",", k, "=", v.is_string() ? v.get<std::string>() : v.dump());
  }
  return out.empty() ? "-" : out;
}

std::string TaintsText(const Json& taints) {
  std::string out;
  if (!taints.is_array()) return "-";
  for (const auto& t : taints) {
    std::string value = t.value("value", "");
    out += StrCat(out.empty() ? "" : ",", t.value("key", ""), value.empty() ? "" : "=", value, ":",
                  t.value("effect", ""));
  }
  return out.empty() ? "-" : out;
}


void PrintNodes(const Json& items) {
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "POOL", "STATUS", "SCHEDULE", "GPUS", "MODELS", "CPUS", "MEMORY", "LAST SEEN"}};
  for (const auto& n : items) {
    rows.push_back({Str(n, "name"), Str(n, "pool"), Str(n, "status"), Str(n, "schedule"),
                    std::to_string(n.value("gpus", 0)), Str(n, "gpu_models"),
                    std::to_string(n.value("cpus", 0)),
                    StrCat(n.value("memory_mib", uint64_t{0}) / 1024, " GiB"),
                    Ago(n.value("last_heartbeat", int64_t{0}))});
  }
  PrintRows(rows);
}

void PrintNodeDetail(const Json& n) {
  const Json& inv = n.contains("inventory") ? n["inventory"] : Json::object();
  std::cout << "name:       " << Str(n, "name") << "\n"
            << "id:         " << Str(n, "id") << "\n"
            << "pool:       " << Str(n, "pool") << "\n"
            << "status:     " << Str(n, "status") << " (last heartbeat "
            << Ago(n.value("last_heartbeat", int64_t{0})) << ")\n"
            << "schedule:   " << Str(n, "schedule") << "\n"
            << "labels:     " << LabelsText(n.value("labels", Json::object())) << "\n"
            << "taints:     " << TaintsText(n.value("taints", Json::array())) << "\n"
            << "host:       " << inv.value("hostname", "-") << ", " << inv.value("os", "-")
            << ", kernel " << inv.value("kernel", "-") << " (" << inv.value("arch", "-") << ")\n"
            << "cpus:       " << inv.value("cpus", 0) << ", memory "
            << inv.value("memory_mib", uint64_t{0}) << " MiB\n"
            << "agent:      " << inv.value("agent_version", "-") << ", GPU backend "
            << inv.value("gpu_backend", "-") << "\n";
  std::string rt;
  for (const auto& r : inv.value("container_runtimes", Json::array())) {
    rt += StrCat(rt.empty() ? "" : ", ", r.value("name", ""), " ", r.value("version", ""));
  }
  std::cout << "runtimes:   " << (rt.empty() ? "-" : rt) << "\n";
  const Json gpus = inv.value("gpus", Json::array());
  std::cout << "gpus:       " << gpus.size() << "\n";
  if (gpus.empty()) return;
  std::vector<std::vector<std::string>> rows = {
      {"  INDEX", "UUID", "MODEL", "MEMORY", "DRIVER", "CUDA", "ECC", "MIG", "INSTANCES"}};
  for (const auto& g : gpus) {
    std::string mig = !g.value("mig_capable", false)  ? "n/a"
                      : g.value("mig_enabled", false) ? "on"
                                                      : "off";
    std::string inst;
    for (const auto& m : g.value("mig_instances", Json::array())) {
      inst +=
          StrCat(inst.empty() ? "" : ",", m.value("profile_name", ""), "@", m.value("start", 0));
    }
    std::string model = g.value("model", "");
    rows.push_back({StrCat("  ", g.value("index", 0)), g.value("uuid", ""),
                    model.empty() ? g.value("product_name", "") : model,
                    StrCat(g.value("memory_mib", uint64_t{0}), " MiB"),
                    g.value("driver_version", ""), g.value("cuda_version", ""),
                    g.value("ecc_enabled", false) ? "on" : "off", mig, inst.empty() ? "-" : inst});
  }
  PrintRows(rows);
  // Issue 6: every MIG instance with its UUID and the job the agent created it for.
  std::vector<std::vector<std::string>> migs = {{"  GPU", "MIG UUID", "PROFILE", "START", "JOB"}};
  for (const auto& g : gpus) {
    for (const auto& m : g.value("mig_instances", Json::array())) {
      const std::string job = m.value("job", "");
      migs.push_back({StrCat("  ", g.value("index", 0)), m.value("uuid", ""),
                      m.value("profile_name", ""), StrCat(m.value("start", 0)),
                      job.empty() ? "(not created by gpuwarden)" : job});
    }
  }
  if (migs.size() > 1) {
    std::cout << "mig instances:\n";
    PrintRows(migs);
  }
}

}  // namespace

void PrintRows(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    if (width.size() < r.size()) width.resize(r.size(), 0);
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

NodeCommands AddNodeCommands(CLI::App& app) {
  auto state = std::make_shared<NodeCommands::State>();
  NodeCommands c;
  c.state = state;
  c.node = app.add_subcommand("node", "manage cluster nodes and their join tokens")
               ->require_subcommand(1);
  auto* jt = c.node->add_subcommand("join-token", "one-time tokens for agents to join")
                 ->require_subcommand(1);
  c.jt_create = jt->add_subcommand("create", "create a join token (shown once)");
  c.jt_create->add_option("--pool", state->pool,
                          "node pool the joining node lands in (default \"default\")");
  c.jt_create->add_option("--ttl", state->ttl, "lifetime, e.g. 1h (default 1h, at most 168h)");
  c.jt_ls = jt->add_subcommand("ls", "list join tokens (never their secrets)");
  c.ls = c.node->add_subcommand("ls", "list nodes with their GPUs");
  c.ls->add_option("--pool", state->pool, "only nodes of this pool");
  auto named = [&](const char* verb, const char* help) {
    auto* cmd = c.node->add_subcommand(verb, help);
    cmd->add_option("name", state->name, "node name")->required();
    return cmd;
  };
  c.show = named("show", "show one node: inventory, GPUs, MIG instances, labels, taints");
  c.cordon = named("cordon", "stop placing new work on the node");
  c.uncordon = named("uncordon", "allow new work on the node again");
  c.drain = named("drain", "cordon the node and move its work away");
  c.rm = named("rm",
               "remove the node and revoke its certificates (its agent is refused from then on)");
  c.label = named("label", "set (key=value) or remove (key-) labels");
  c.label->add_option("labels", state->args, "key=value or key-")->required();
  c.taint = named("taint", "add (key=value:Effect, key:Effect) or remove (key-) taints");
  c.taint->add_option("taints", state->args, "key=value:NoSchedule, key:NoExecute or key-")
      ->required();
  c.pool = named("pool", "move the node to another pool (jobs the new pool does not admit are requeued)");
  c.pool->add_option("pool", state->pool, "the new pool")->required();

  c.pools = app.add_subcommand("pool", "node pools and the tenants they are dedicated to")
                ->require_subcommand(1);
  c.pool_ls = c.pools->add_subcommand("ls", "list pools: dedication and node count");
  c.pool_dedicate = c.pools->add_subcommand(
      "dedicate",
      "reserve a pool for tenants: only their jobs run there from now on (other tenants' jobs "
      "placed there are requeued at once); tenants with isolation \"dedicated\" run only in "
      "such pools");
  c.pool_dedicate->add_option("pool", state->pool, "pool name (need not have nodes yet)")
      ->required();
  c.pool_dedicate->add_option("--tenant", state->tenants, "tenant the pool is for (repeatable)")
      ->required();
  c.pool_general = c.pools->add_subcommand(
      "general", "make a dedicated pool general again (any tenant not bound to dedicated pools)");
  c.pool_general->add_option("pool", state->pool, "pool name")->required();
  return c;
}

bool NodeCommands::Parsed() const {
  return (node != nullptr && node->parsed()) || (pools != nullptr && pools->parsed());
}

void RunNodeCommand(const NodeCommands& c, const NodeCommandContext& ctx) {
  const auto& s = *c.state;
  const bool json = ctx.output == "json";
  auto print = [&](const Json& j, const std::function<void()>& table) {
    if (json) {
      std::cout << j.dump(2) << "\n";
    } else {
      table();
    }
  };
  if (c.jt_create->parsed()) {
    Json j = ctx.request("POST", "/api/v1/nodes/join-tokens",
                         Json{{"pool", s.pool.empty() ? "default" : s.pool}, {"ttl", s.ttl}});
    print(j, [&] {
      std::cout << "join token " << j.value("id", "") << " for pool " << j.value("pool", "")
                << ", single use, expires in " << s.ttl << "\n"
                << "token (shown once; put it in a file readable only by the agent):\n"
                << j.value("token", "") << "\n"
                << "on the node: gpuwarden agent --server URL --join-token FILE --data-dir DIR\n";
    });
  } else if (c.jt_ls->parsed()) {
    Json j = ctx.request("GET", "/api/v1/nodes/join-tokens", nullptr);
    print(j, [&] {
      std::vector<std::vector<std::string>> rows = {{"ID", "POOL", "EXPIRES", "USED BY"}};
      for (const auto& t : j["items"]) {
        std::time_t exp = t.value("expires_at", int64_t{0});
        std::tm tm{};
        gmtime_r(&exp, &tm);
        char buf[32];
        std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M", &tm);
        rows.push_back({Str(t, "id"), Str(t, "pool"), buf, Str(t, "used_by_node")});
      }
      PrintRows(rows);
    });
  } else if (c.ls->parsed()) {
    std::string path = "/api/v1/nodes";
    if (!s.pool.empty()) path += "?pool=" + s.pool;
    Json j = ctx.request("GET", path, nullptr);
    print(j, [&] { PrintNodes(j["items"]); });
  } else if (c.show->parsed()) {
    Json j = ctx.request("GET", "/api/v1/nodes/" + s.name, nullptr);
    print(j, [&] { PrintNodeDetail(j); });
  } else if (c.cordon->parsed() || c.uncordon->parsed() || c.drain->parsed()) {
    const char* verb = c.cordon->parsed() ? "cordon" : c.uncordon->parsed() ? "uncordon" : "drain";
    Json j = ctx.request("POST", StrCat("/api/v1/nodes/", s.name, "/", verb), Json::object());
    print(j,
          [&] { std::cout << "node " << s.name << " is now " << j.value("schedule", "") << "\n"; });
  } else if (c.rm->parsed()) {
    Json j = ctx.request("DELETE", "/api/v1/nodes/" + s.name, nullptr);
    print(j, [&] { std::cout << "removed node " << s.name << "; its certificates are revoked\n"; });
  } else if (c.pool_ls->parsed()) {
    Json j = ctx.request("GET", "/api/v1/pools", nullptr);
    print(j, [&] {
      std::vector<std::vector<std::string>> rows = {{"POOL", "DEDICATED TO", "NODES", "CHANGED"}};
      for (const auto& p : j["pools"]) {
        std::string to;
        for (const auto& t : p.value("dedicated_to", Json::array())) {
          to += StrCat(to.empty() ? "" : ",", t.get<std::string>());
        }
        if (to.empty()) to = p.value("reserved", false) ? "(deleted tenants: no one)" : "- (general)";
        rows.push_back({Str(p, "name"), to, std::to_string(p.value("nodes", 0)),
                        Ago(p.value("updated_at", int64_t{0}))});
      }
      PrintRows(rows);
    });
  } else if (c.pool_dedicate->parsed() || c.pool_general->parsed()) {
    Json tenants = Json::array();
    if (c.pool_dedicate->parsed()) {
      for (const auto& t : s.tenants) tenants.push_back(t);
    }
    Json j = ctx.request("PUT", "/api/v1/pools/" + s.pool, Json{{"dedicated_to", tenants}});
    print(j, [&] {
      std::string to;
      for (const auto& t : j.value("dedicated_to", Json::array())) {
        to += StrCat(to.empty() ? "" : ", ", t.get<std::string>());
      }
      if (to.empty()) {
        std::cout << "pool " << s.pool << " is general\n";
      } else {
        std::cout << "pool " << s.pool << " is dedicated to " << to << " ("
                  << j.value("nodes", 0) << " nodes); other tenants' jobs there were requeued\n";
      }
    });
  } else if (c.pool->parsed()) {
    Json j = ctx.request("PATCH", "/api/v1/nodes/" + s.name, Json{{"pool", s.pool}});
    print(j, [&] { std::cout << "node " << s.name << " is now in pool " << j.value("pool", "") << "\n"; });
  } else if (c.label->parsed() || c.taint->parsed()) {
    Json add = Json::array(), remove = Json::array(), set = Json::object();
    for (const auto& a : s.args) {
      if (!a.empty() && a.back() == '-') {
        remove.push_back(a.substr(0, a.size() - 1));
      } else if (c.label->parsed()) {
        size_t eq = a.find('=');
        if (eq == std::string::npos)
          ctx.fail(StrCat("label \"", a, "\": expected key=value or key-"), 2);
        set[a.substr(0, eq)] = a.substr(eq + 1);
      } else {
        add.push_back(a);
      }
    }
    Json j = c.label->parsed() ? ctx.request("POST", StrCat("/api/v1/nodes/", s.name, "/labels"),
                                             Json{{"set", set}, {"remove", remove}})
                               : ctx.request("POST", StrCat("/api/v1/nodes/", s.name, "/taints"),
                                             Json{{"add", add}, {"remove", remove}});
    print(j, [&] {
      std::cout << "node " << s.name << ": labels " << LabelsText(j.value("labels", Json::object()))
                << ", taints " << TaintsText(j.value("taints", Json::array())) << "\n";
    });
  }
}

}  // namespace warden::cli
