#pragma once
// LatencyRecorder: per-operation latencies in a Boost.Histogram with one bin per microsecond up
// to 100 ms (overflow counted), so recording is an integer index and an increment — no
// allocation, no logarithm on the measured path — and percentiles are exact to 1 µs.
#include <boost/histogram.hpp>

#include <cstdint>
#include <vector>

namespace lockstep::bench {

class LatencyRecorder {
 public:
  static constexpr int kMaxMicros = 100'000;

  LatencyRecorder()
      : histogram_(boost::histogram::make_histogram_with(std::vector<std::uint64_t>(),
                                                         Axis(0, kMaxMicros))) {}

  void RecordNs(std::int64_t nanos) { histogram_(static_cast<int>(nanos / 1000)); }

  // The latency (µs) at or below which `quantile` of the recorded operations fall (the upper
  // edge of its 1 µs bin); kMaxMicros when it lies in the overflow; 0 when nothing was recorded.
  double Percentile(double quantile) const {
    double total = 0;
    for (auto&& bin : boost::histogram::indexed(histogram_, boost::histogram::coverage::all)) {
      total += static_cast<double>(*bin);
    }
    if (total == 0) return 0;
    const double target = quantile * total;
    double seen = 0;
    for (auto&& bin : boost::histogram::indexed(histogram_, boost::histogram::coverage::all)) {
      seen += static_cast<double>(*bin);
      if (seen >= target) return std::min<double>(bin.bin() + 1, kMaxMicros);
    }
    return kMaxMicros;
  }

 private:
  using Axis = boost::histogram::axis::integer<int>;
  decltype(boost::histogram::make_histogram_with(std::vector<std::uint64_t>(),
                                                 Axis(0, 1))) histogram_;
};

}  // namespace lockstep::bench
