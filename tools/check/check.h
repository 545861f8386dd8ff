// `switchboard check`: the consistency checker (see tools/check/README.md).
#pragma once

namespace sb::check {

// argv excludes "switchboard check". Returns the process exit code: 0 when no
// violation was found, 1 when some was, 2 on bad usage or setup failure.
int Main(int argc, char** argv);

}  // namespace sb::check
