// The transfer workload on RocksDB, for comparison in the same run of the same tool: N threads,
// per-account locks taken in a fixed order (lower index first) around the read-modify-write, one
// WriteBatch with both balances in the "state" column family and the event in "events", written
// with sync=true. RocksDB options are the defaults apart from the synced WAL.
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "base/clock.h"
#include "bench/engine_workloads.h"

namespace lockstep::bench {
namespace {

base::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return base::Status::Ok();
  return base::IoError(fmt::format("rocksdb {}: {}", what, s.ToString()));
}

}  // namespace

base::Result<EngineRow> RunTransferRocksdb(const EngineWorkload& w) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, {}}, {"state", {}}, {"events", {}}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  LOCKSTEP_RETURN_IF_ERROR(
      FromRocks(rocksdb::DB::Open(options, w.dir, families, &handles, &raw), "open"));
  std::unique_ptr<rocksdb::DB> db(raw);
  rocksdb::ColumnFamilyHandle* state = handles[1];
  rocksdb::ColumnFamilyHandle* events = handles[2];
  for (std::uint32_t first = 0; first < w.accounts; first += 1000) {
    rocksdb::WriteBatch load;
    for (std::uint32_t i = first; i < std::min(w.accounts, first + 1000); ++i) {
      load.Put(state, AccountKey(i), "1000000");
    }
    rocksdb::WriteOptions synced;
    synced.sync = true;
    LOCKSTEP_RETURN_IF_ERROR(FromRocks(db->Write(synced, &load), "load"));
  }

  std::vector<std::mutex> locks(w.accounts);
  const std::int64_t start =
      base::MonotonicNs() + static_cast<std::int64_t>(w.warmup_seconds * 1e9);
  const std::int64_t end = start + static_cast<std::int64_t>(w.seconds * 1e9);
  std::mutex stats_mu;
  EngineRow row;
  base::Status error;
  std::atomic<std::uint64_t> sequence{0};
  const std::string payload(w.event_bytes, 'x');
  auto worker = [&](std::uint32_t id) {
    std::mt19937_64 rng(id + 1);
    rocksdb::WriteOptions synced;
    synced.sync = true;
    std::string a, b;
    for (std::int64_t began = base::MonotonicNs(); began < end; began = base::MonotonicNs()) {
      const auto from = static_cast<std::uint32_t>(rng() % w.accounts);
      auto to = static_cast<std::uint32_t>(rng() % (w.accounts - 1));
      if (to >= from) ++to;
      // Lower index first, then the higher: a fixed order, so no two threads deadlock.
      // (std::scoped_lock would use std::lock's try-and-back-off instead of an order.)
      std::lock_guard first(locks[std::min(from, to)]);
      std::lock_guard second(locks[std::max(from, to)]);
      rocksdb::Status s = db->Get({}, state, AccountKey(from), &a);
      if (s.ok()) s = db->Get({}, state, AccountKey(to), &b);
      const long amount = static_cast<long>(rng() % 100);
      rocksdb::WriteBatch batch;
      if (s.ok()) s = batch.Put(state, AccountKey(from), std::to_string(std::stol(a) - amount));
      if (s.ok()) s = batch.Put(state, AccountKey(to), std::to_string(std::stol(b) + amount));
      if (s.ok()) s = batch.Put(events, fmt::format("{:020}", sequence.fetch_add(1)), payload);
      if (s.ok()) s = db->Write(synced, &batch);
      const std::int64_t now = base::MonotonicNs();
      std::lock_guard stats(stats_mu);
      if (!s.ok()) {
        if (error.ok()) error = FromRocks(s, "transfer");
        return;
      }
      if (now >= start && now <= end) {
        ++row.ops;
        row.latency.RecordNs(now - began);
      }
    }
  };
  std::vector<std::thread> threads;
  for (std::uint32_t i = 0; i < w.outstanding; ++i) threads.emplace_back(worker, i);
  for (auto& t : threads) t.join();
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  if (!error.ok()) return error;
  row.seconds = static_cast<double>(end - start) / 1e9;
  return row;
}

}  // namespace lockstep::bench
