"""concurry-cpp's benchmark suite report (//benchmarks:report); see docs/benchmarks.md."""
