// Byte encodings used across modules: hex, base64url (no padding), SHA-256, constant-time compare.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace warden::common {

std::string HexEncode(std::string_view bytes);
std::optional<std::string> HexDecode(std::string_view hex);
std::string Base64UrlEncode(std::string_view bytes);
std::optional<std::string> Base64UrlDecode(std::string_view text);
// Raw 32-byte SHA-256 digest.
std::string Sha256(std::string_view data);
// Hex of SHA-256; the form in which secrets (session ids, API tokens) are stored.
std::string Sha256Hex(std::string_view data);
// Percent-encodes every byte outside RFC 3986 "unreserved" (A-Z a-z 0-9 - . _ ~) as %XX
// (upper-case hex), so '&', '=', '?', '#', '/', ':', '%', '+' and spaces can never change how a URL,
// query string or form body is split. Used for form bodies, query strings and otpauth:// URIs.
std::string PercentEncode(std::string_view value);
// Compares without leaking the position of the first difference through timing.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace warden::common
