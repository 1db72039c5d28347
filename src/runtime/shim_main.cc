// warden-sandbox-shim: the per-job shim as its own small executable (tests and benchmarks point
// RunnerOptions::shim_command at it; the agent can run the same code as a hidden verb).
#include "runtime/runtime.h"

int main(int argc, char** argv) { return warden::runtime::ShimMain(argc, argv); }
