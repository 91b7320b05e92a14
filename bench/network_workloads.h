#pragma once
// lockstep-bench over the network (issue 4): against lockstepd at --broker, or, without one, a
// server the bench starts in-process on a free loopback port over its own data folder.
//
//   tcp       raw loopback TCP, one connection, 1 MiB writes: the ceiling for consume
//   produce   Producer -> server: events/s and MB/s of payload, send to delivery latency
//   consume   events written first, then a Consumer reads them all: payload MB/s into Poll()
//   e2e       one-event commits at a steady --rate; latency from the commit's acknowledgement to
//             the consumer's Poll() returning the event, next to the commit latency itself
//   transfer  the embedded transfer workload, through the client (--remote)
#include <cstdint>
#include <string>

#include "base/status.h"
#include "bench/engine_workloads.h"
#include "bench/latency.h"

namespace lockstep::bench {

struct NetworkWorkload {
  std::string broker;  // empty: start a server in-process
  std::string dir;     // for the in-process server's data
  storage::Io* io = nullptr;
  storage::LogOptions log;
  std::uint32_t outstanding = 256;
  std::uint32_t record_bytes = 1024;
  std::uint32_t accounts = 100'000;
  std::uint32_t rate = 10'000;  // e2e: commits per second
  double seconds = 5;
  double warmup_seconds = 0.5;
};

struct NetworkRow {
  std::uint64_t ops = 0;
  double seconds = 0;
  double payload_bytes_per_op = 0;
  std::uint64_t conflicts = 0;
  LatencyRecorder latency;
  LatencyRecorder commit_latency;  // e2e: the durable commit's own latency
};

base::Result<NetworkRow> RunTcp(const NetworkWorkload& w);
base::Result<NetworkRow> RunProduce(const NetworkWorkload& w);
base::Result<NetworkRow> RunConsume(const NetworkWorkload& w);
base::Result<NetworkRow> RunEndToEnd(const NetworkWorkload& w);
base::Result<NetworkRow> RunTransferRemote(const NetworkWorkload& w);

}  // namespace lockstep::bench
