# Every dependency is a Debian 12 package installed by tools/setup.sh.
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
pkg_check_modules(URING REQUIRED IMPORTED_TARGET liburing>=2.0)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash>=0.8)
pkg_check_modules(URCU_BP REQUIRED IMPORTED_TARGET liburcu-bp>=0.13)
find_package(Boost 1.81 REQUIRED)
find_package(FlatBuffers REQUIRED)
find_package(CLI11 REQUIRED)
find_package(tomlplusplus REQUIRED)
find_package(prometheus-cpp REQUIRED)  # the metrics listener (core only: no civetweb)
find_package(nlohmann_json REQUIRED)  # the lockstep CLI, the bench, tests
if(LOCKSTEP_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
if(LOCKSTEP_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()

# jemalloc for the programs (lockstepd, lockstep-bench), never for the libraries: a library
# leaves the allocator to the program that links it. glibc's malloc locks an arena when one
# thread frees what another allocated (a commit's state is made by the submitting thread and
# freed by the sequencer's or the log's), and the threads stall on it; jemalloc frees into
# per-thread caches (docs/benchmarks.md, stop 16). Not with a sanitizer or libFuzzer: they
# bring their own.
if(LOCKSTEP_JEMALLOC AND NOT LOCKSTEP_SANITIZE AND NOT LOCKSTEP_FUZZ)
  pkg_check_modules(JEMALLOC IMPORTED_TARGET jemalloc>=5)
  if(NOT JEMALLOC_FOUND)
    message(FATAL_ERROR "jemalloc >= 5 not found: run tools/setup.sh (it installs "
                        "libjemalloc-dev), or configure with -DLOCKSTEP_JEMALLOC=OFF")
  endif()
endif()
function(lockstep_use_jemalloc target)
  if(TARGET PkgConfig::JEMALLOC)
    target_link_libraries(${target} PRIVATE PkgConfig::JEMALLOC)
  endif()
endfunction()
