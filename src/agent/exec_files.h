// Private to agent: small helpers the executors share for their per-job state files.
#pragma once

#include <cctype>
#include <fstream>
#include <sstream>
#include <string>

namespace warden::agent {

// A job id safe as one path component: 1-64 of [A-Za-z0-9_-].
inline bool SafeJobId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

// The whole (small) file, or "" when it cannot be read.
inline std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace warden::agent
