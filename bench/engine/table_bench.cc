// MVCC table costs on 100,000 accounts: a point read at a snapshot, a 100-row scan, and a put
// (what the sequencer pays per table write). Keys are "acct/NNNNNN", values 8 bytes.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "engine/table.h"

namespace lockstep::engine {
namespace {

constexpr int kAccounts = 100'000;

Bytes B(const std::string& s) { return {reinterpret_cast<const std::byte*>(s.data()), s.size()}; }

std::string Key(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "acct/%06d", i);
  return buf;
}

struct Loaded {
  Table table;
  std::vector<std::string> keys;
  std::uint64_t lsn = 0;
  Loaded() {
    const std::string value = "00001000";
    for (int i = 0; i < kAccounts; ++i) {
      keys.push_back(Key(i));
      table.Put(B(keys.back()), B(value), Lsn(++lsn));
    }
  }
};

Loaded& Shared() {
  static Loaded loaded;
  return loaded;
}

void BM_TableGet(benchmark::State& state) {
  Loaded& l = Shared();
  std::mt19937_64 rng(1);
  std::vector<int> picks(4096);
  for (auto& p : picks) p = static_cast<int>(rng() % kAccounts);
  std::size_t i = 0;
  for (auto _ : state) {
    rcu::ReadGuard guard;  // as every engine read does
    benchmark::DoNotOptimize(l.table.Get(B(l.keys[picks[i++ & 4095]]), Lsn(l.lsn)));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_TableGet);

void BM_TableScan100(benchmark::State& state) {
  Loaded& l = Shared();
  std::mt19937_64 rng(2);
  std::vector<int> picks(4096);
  for (auto& p : picks) p = static_cast<int>(rng() % (kAccounts - 100));
  std::size_t i = 0;
  for (auto _ : state) {
    ScanOptions o;
    o.from = l.keys[picks[i++ & 4095]];
    o.limit = 100;
    std::size_t bytes = 0;
    rcu::ReadGuard guard;
    l.table.Scan(o, Lsn(l.lsn), [&](std::string_view k, Bytes v, Lsn) {
      bytes += k.size() + v.size();
      return true;
    });
    benchmark::DoNotOptimize(bytes);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * 100);
}
BENCHMARK(BM_TableScan100);

void BM_TablePut(benchmark::State& state) {
  Table table;
  std::vector<std::string> keys;
  for (int i = 0; i < kAccounts; ++i) keys.push_back(Key(i));
  const std::string value = "00001000";
  std::uint64_t lsn = 0;
  for (auto _ : state) {
    ++lsn;
    table.Put(B(keys[lsn % kAccounts]), B(value), Lsn(lsn));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_TablePut);

}  // namespace
}  // namespace lockstep::engine
