// lockstep: the command-line tool (docs/cli.md). Global options may stand before or after the
// command. Exit codes: 0 success, 1 failure or conflict, 2 usage.
#include <spdlog/spdlog.h>

#include <cstdlib>

#include "tools/lockstep/cli.h"

int main(int argc, char** argv) {
  using namespace lockstep::cli;
  // The client logs nothing a user needs on stderr besides our own messages.
  spdlog::set_level(spdlog::level::warn);
  Context ctx;
  const char* env_broker = std::getenv("LOCKSTEP_BROKER");
  ctx.broker = env_broker != nullptr && *env_broker != '\0' ? env_broker : "127.0.0.1:7070";

  CLI::App app("lockstep: topics, tables, events and consumer groups of a Lockstep server",
               "lockstep");
  app.fallthrough();  // global options after the command too
  app.require_subcommand(1);
  app.add_option("--broker", ctx.broker,
                 "HOST:PORT of lockstepd (default $LOCKSTEP_BROKER, else "
                 "127.0.0.1:7070)");
  std::string format;  // human, except consume: raw (payloads alone)
  app.add_option("--format", format,
                 "human (default) | json (one object per line) | raw (consume: payloads alone, "
                 "its default)")
      ->check(CLI::IsMember({"human", "json", "raw"}));
  app.add_option("--timeout", ctx.timeout_s,
                 "seconds a call keeps retrying after a lost connection before it fails")
      ->check(CLI::Range(0.1, 3600.0));

  Run run;
  AddCatalogCommands(app, ctx, &run);
  AddDataCommands(app, ctx, &run);
  AddGroupCommands(app, ctx, &run);
  AddTxnCommands(app, ctx, &run);
  AddOfflineCommands(app, ctx, &run);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  ctx.format_name = format;
  ctx.format = format == "json" ? Format::kJson : Format::kHuman;
  if (!run) return UsageError("name a command");
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lockstep: %s\n", e.what());
    return kExitFailure;
  }
}
