// switchboard: a real-time chat server. `switchboard --help` lists the commands.
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "check/check.h"
#include "server/config.h"
#include "server/node.h"

extern char** environ;

namespace {

constexpr const char* kVersion = "0.1.0";

void Usage() {
  std::printf(
      "switchboard %s: a real-time chat server (WebSocket + REST).\n\n"
      "Usage:\n"
      "  switchboard serve [options]   run a node (all roles, embedded store)\n"
      "  switchboard check [options]   drive clients against a server and report lost,\n"
      "                                duplicated, reordered messages and gaps\n"
      "  switchboard version           print the version\n"
      "  switchboard --help            this text; `switchboard serve --help` lists every setting\n",
      kVersion);
}

void ServeUsage() {
  std::printf(
      "Usage: switchboard serve [options]\n\n"
      "With no options it serves http://127.0.0.1:8080 (REST, WebSocket at /v1/ws, /metrics,\n"
      "/healthz, /readyz) from ./data, creating the directory and a signing key on first start.\n\n"
      "Options:\n"
      "  --listen HOST:PORT   same as --set server.listen=HOST:PORT\n"
      "  --data-dir DIR       same as --set store.data_dir=DIR\n"
      "  --config FILE        a TOML file of [section] key = value settings\n"
      "  --set KEY=VALUE      any setting below (repeatable)\n"
      "  -h, --help           this text\n\n"
      "Precedence: defaults < --config file < SWITCHBOARD_<SECTION>_<NAME> environment\n"
      "variables (e.g. SWITCHBOARD_STORE_FSYNC=none) < command-line options.\n\n"
      "Settings (key, default, meaning):\n");
  for (auto& k : sb::server::ConfigKeys())
    std::printf("  %-28s %-14s %s\n", k.key.c_str(), k.default_value.empty() ? "\"\"" : k.default_value.c_str(),
                k.help.c_str());
}

int Serve(int argc, char** argv) {
  sb::server::Config cfg;
  std::string config_file;
  std::vector<std::pair<std::string, std::string>> overrides;
  for (int i = 0; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&](std::string_view flag) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "switchboard serve: %.*s needs a value\n", static_cast<int>(flag.size()), flag.data());
        return nullptr;
      }
      return argv[++i];
    };
    // Accept both "--flag value" and "--flag=value".
    std::string flag(a), inline_value;
    bool has_inline = false;
    if (a.substr(0, 2) == "--" && a.find('=') != std::string_view::npos) {
      flag = std::string(a.substr(0, a.find('=')));
      inline_value = std::string(a.substr(a.find('=') + 1));
      has_inline = true;
    }
    auto get = [&]() -> const char* { return has_inline ? inline_value.c_str() : value(flag); };
    if (flag == "-h" || flag == "--help") {
      ServeUsage();
      return 0;
    } else if (flag == "--listen") {
      const char* v = get();
      if (!v) return 2;
      overrides.emplace_back("server.listen", v);
    } else if (flag == "--data-dir") {
      const char* v = get();
      if (!v) return 2;
      overrides.emplace_back("store.data_dir", v);
    } else if (flag == "--config") {
      const char* v = get();
      if (!v) return 2;
      config_file = v;
    } else if (flag == "--set") {
      const char* v = get();
      if (!v) return 2;
      std::string kv = v;
      size_t eq = kv.find('=');
      if (eq == std::string::npos) {
        std::fprintf(stderr, "switchboard serve: --set needs KEY=VALUE, got '%s'\n", kv.c_str());
        return 2;
      }
      overrides.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    } else {
      std::fprintf(stderr, "switchboard serve: unknown option '%s' (see --help)\n", argv[i]);
      return 2;
    }
  }
  auto fail = [](const sb::Status& s) {
    std::fprintf(stderr, "switchboard serve: %s\n", s.message().c_str());
    return 2;
  };
  if (!config_file.empty())
    if (auto s = sb::server::LoadConfigFile(cfg, config_file); !s.ok()) return fail(s);
  if (auto s = sb::server::ApplyEnvironment(cfg, environ); !s.ok()) return fail(s);
  for (auto& [k, v] : overrides)
    if (auto s = sb::server::SetConfigKey(cfg, k, v); !s.ok()) return fail(s);
  if (auto s = sb::server::Validate(cfg); !s.ok()) return fail(s);
  return sb::server::RunServe(cfg);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    Usage();
    return 2;
  }
  std::string_view cmd = argv[1];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    Usage();
    return 0;
  }
  if (cmd == "version" || cmd == "--version") {
    std::printf("switchboard %s\n", kVersion);
    return 0;
  }
  if (cmd == "serve") return Serve(argc - 2, argv + 2);
  if (cmd == "check") return sb::check::Main(argc - 2, argv + 2);
  std::fprintf(stderr, "switchboard: unknown command '%s' (see --help)\n", argv[1]);
  return 2;
}
