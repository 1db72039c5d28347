// warden-sandbox-shim: the per-job shim as its own small static executable (see shim.cc). The
// runner starts it through RunnerOptions::shim_command.
#include "runtime/shim_support.h"

int main(int argc, char** argv) { return warden::runtime::ShimMain(argc, argv); }
