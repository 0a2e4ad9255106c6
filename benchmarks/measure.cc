#include "benchmarks/measure.h"

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <system_error>
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

int64_t ContextSwitches() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return int64_t{usage.ru_nvcsw} + usage.ru_nivcsw;
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

std::string FindRunfile(const std::string& path) {
  namespace fs = std::filesystem;
  const std::string in_workspace = "concurry/" + path;
  std::vector<fs::path> candidates;
  for (const char* env : {"RUNFILES_DIR", "TEST_SRCDIR"}) {
    if (const char* dir = std::getenv(env); dir != nullptr && *dir != '\0') {
      candidates.push_back(fs::path(dir) / in_workspace);
    }
  }
  std::error_code error;
  const fs::path binary = fs::read_symlink("/proc/self/exe", error);
  if (!error) candidates.push_back(fs::path(binary.string() + ".runfiles") / in_workspace);
  candidates.push_back(fs::path(path));
  for (const fs::path& candidate : candidates) {
    if (fs::is_regular_file(candidate, error)) return candidate.string();
  }
  return "";
}

namespace {

// Returns `word` in single quotes for the shell (a quote inside becomes '\'').
std::string ShellQuote(const std::string& word) {
  std::string quoted = "'";
  for (char c : word) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

}  // namespace

ScriptOutput RunPythonScript(const std::string& script, const std::vector<std::string>& args) {
  ScriptOutput result;
  const std::string path = FindRunfile(script);
  if (path.empty()) {
    result.error = script + " not found in the runfiles";
    return result;
  }
  std::string command = "python3 " + ShellQuote(path);
  for (const std::string& arg : args) command += " " + ShellQuote(arg);
  command += " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    result.error = "popen failed: " + command;
    return result;
  }
  char buffer[4096];
  size_t read;
  while ((read = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    result.output.append(buffer, read);
  }
  const int status = pclose(pipe);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    result.error = (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 127)
                       ? "python3 not found on PATH"
                       : "`" + command + "` failed: " + result.output;
  }
  return result;
}

std::optional<double> JsonNumber(const std::string& json, const std::string& key) {
  const std::string quoted = "\"" + key + "\":";
  const size_t at = json.find(quoted);
  if (at == std::string::npos) return std::nullopt;
  const char* begin = json.c_str() + at + quoted.size();
  char* end = nullptr;
  const double value = std::strtod(begin, &end);
  if (end == begin) return std::nullopt;
  return value;
}

std::optional<std::string> JsonString(const std::string& json, const std::string& key) {
  const std::string quoted = "\"" + key + "\": \"";
  const size_t at = json.find(quoted);
  if (at == std::string::npos) return std::nullopt;
  const size_t begin = at + quoted.size();
  const size_t end = json.find('"', begin);
  if (end == std::string::npos) return std::nullopt;
  return json.substr(begin, end - begin);
}

}  // namespace concurry::bench
