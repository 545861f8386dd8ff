// Wiring of the one-node shape: embedded store, signing keys, chat core, gateway.
#pragma once

#include "server/config.h"

namespace sb::server {

// Runs `switchboard serve` until SIGTERM/SIGINT; returns the process exit code.
int RunServe(const Config& cfg);

}  // namespace sb::server
