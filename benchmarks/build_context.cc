// Records how a benchmark binary was built in the "context" of its JSON output, where the report
// (//benchmarks:report) reads it: figures from an unoptimized or sanitized build are not
// measurements, and a reader comparing two reports needs the compiler and flags.
//
// Linked into every concurry_benchmark() binary (benchmarks/benchmark.bzl) with alwayslink, so the
// registration below runs before main() without any call from the benchmark's own code.

#include <string>

#include "benchmark/benchmark.h"

#ifndef CONCURRY_COMPILATION_MODE
#error "CONCURRY_COMPILATION_MODE is set by //benchmarks:build_context"
#endif

namespace {

std::string Sanitizers() {
  std::string names;
#if defined(__SANITIZE_ADDRESS__)
  names += "address ";
#endif
#if defined(__SANITIZE_THREAD__)
  names += "thread ";
#endif
  // GCC defines no macro for -fsanitize=undefined, so UBSan is not reported.
  return names.empty() ? "none" : names.substr(0, names.size() - 1);
}

// Vector extensions the compiler was allowed to use: -march=native on a recent x86-64 shows
// "avx2 avx512f", a portable build "baseline".
std::string TargetFeatures() {
  std::string features;
#if defined(__AVX2__)
  features += " avx2";
#endif
#if defined(__AVX512F__)
  features += " avx512f";
#endif
  return features.empty() ? "baseline" : features.substr(1);
}

const bool registered = [] {
  benchmark::AddCustomContext("concurry_compiler", __VERSION__);
  benchmark::AddCustomContext("concurry_compilation_mode", CONCURRY_COMPILATION_MODE);
#if defined(__OPTIMIZE__)
  benchmark::AddCustomContext("concurry_optimized", "yes");
#else
  benchmark::AddCustomContext("concurry_optimized", "no");
#endif
#if defined(NDEBUG)
  benchmark::AddCustomContext("concurry_ndebug", "yes");
#else
  benchmark::AddCustomContext("concurry_ndebug", "no");
#endif
  benchmark::AddCustomContext("concurry_sanitizers", Sanitizers());
  benchmark::AddCustomContext("concurry_target_features", TargetFeatures());
  return true;
}();

}  // namespace
