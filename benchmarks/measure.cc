#include "benchmarks/measure.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace concurry::bench {

double PercentileMicros(std::vector<int64_t>& samples_ns, double p) {
  if (samples_ns.empty()) return 0;
  std::sort(samples_ns.begin(), samples_ns.end());
  const size_t index = std::min(samples_ns.size() - 1, static_cast<size_t>(p * samples_ns.size()));
  return static_cast<double>(samples_ns[index]) / 1000.0;
}
namespace {

// Returns the value in kB of `key` ("VmHWM:") in /proc/self/status, or -1.
int64_t ReadStatusKb(const char* key) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(std::strlen(key)));
  }
  return -1;
}

}  // namespace

int64_t CpuMicros(int who) {
  rusage usage{};
  getrusage(who, &usage);
  return (int64_t{usage.ru_utime.tv_sec} + usage.ru_stime.tv_sec) * 1'000'000 +
         usage.ru_utime.tv_usec + usage.ru_stime.tv_usec;
}

PeakRssGrowth::PeakRssGrowth() {
  FILE* clear_refs = std::fopen("/proc/self/clear_refs", "w");
  if (clear_refs != nullptr) {
    ok_ = std::fputs("5", clear_refs) >= 0;
    ok_ = (std::fclose(clear_refs) == 0) && ok_;
  }
  baseline_kb_ = ReadStatusKb("VmRSS:");
}

double PeakRssGrowth::GrowthKb() const {
  const int64_t peak = ReadStatusKb("VmHWM:");
  if (!ok_ || peak < 0 || baseline_kb_ < 0) return -1;
  return static_cast<double>(peak - baseline_kb_);
}

}  // namespace concurry::bench
