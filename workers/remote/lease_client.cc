// A client process for the host's lease test (host_test.cc): creates one remote Counter on the
// host at argv[1] with the token argv[2], checks that it answers, prints "ready" and then waits
// forever with its connection open. The test stops it (SIGSTOP) to play a client whose machine
// hangs, and kills it.
//
//   lease_client 127.0.0.1:7000 token

#include <unistd.h>

#include <cstdio>
#include <exception>

#include "workers/options.h"
#include "workers/remote/test_classes.h"
#include "workers/worker.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: lease_client <host:port> <token>\n");
    return 2;
  }
  try {
    auto counter = concurry::Worker<remote_test::Counter>::Create(
        {.mode = concurry::Mode::kRemote,
         .remote = concurry::RemoteOptions{.hosts = {argv[1]}, .token = argv[2]}},
        0);
    if (counter.Call(&remote_test::Counter::Add, 1).Result() != 1) return 1;
    std::printf("ready\n");
    std::fflush(stdout);
    // The worker lives as long as the process; gRPC's threads keep answering the host's pings
    // until the process is stopped.
    for (;;) pause();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lease_client: %s\n", e.what());
    return 1;
  }
}
