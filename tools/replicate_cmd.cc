// rill replicate init: make a directory a node of a replicated store
// (docs/replication.md).
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common.h"
#include "rill/replication.h"
#include "rill/store.h"

namespace rill::tool {
namespace {

struct InitArgs {
  std::string node;
  std::string servers;
  ReplicationOptions options;
  int64_t append_timeout_ms = 10000;
  int64_t connect_timeout_ms = 2000;
  int64_t group_commit_wait_us = absl::ToInt64Microseconds(ReplicationOptions().group_commit_wait);
};

int RunInit(InitArgs args) {
  args.options.servers = absl::StrSplit(args.servers, ',', absl::SkipWhitespace());
  args.options.append_timeout = absl::Milliseconds(args.append_timeout_ms);
  args.options.connect_timeout = absl::Milliseconds(args.connect_timeout_ms);
  args.options.group_commit_wait = absl::Microseconds(args.group_commit_wait_us);
  absl::Status s = InitReplicatedNode(args.node, args.options);
  if (!s.ok()) {
    return Fail(
        s, absl::IsUnavailable(s) ? "check that the NATS servers run and have JetStream on" : "");
  }
  PrintLine(absl::StrCat("node ", args.node, " follows JetStream stream ", args.options.stream,
                         " (subject ", args.options.effective_subject(), ") at ", args.servers));
  return kExitOk;
}

struct PushArgs {
  std::string store;
  std::string servers;
  ReplicationOptions options;
};

int RunPush(PushArgs args) {
  args.options.servers = absl::StrSplit(args.servers, ',', absl::SkipWhitespace());
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kRead);
  if (!store.ok()) return Fail(store.status());
  absl::StatusOr<PushResult> pushed = PushToStream(store->get(), args.options);
  if (!pushed.ok()) return Fail(pushed.status());
  PrintLine(absl::StrCat("pushed ", pushed->events, " events in ", pushed->messages,
                         " messages to JetStream stream ", args.options.stream, " (last sequence ",
                         pushed->last_sequence, "); create nodes on it with rill replicate init"));
  return kExitOk;
}

struct SyncArgs {
  std::string node;
  int64_t timeout_ms = 60000;
};

int RunSync(const SyncArgs& args) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.node, OpenMode::kWrite);
  if (!store.ok()) return Fail(store.status());
  absl::Status s = WaitForReplica(store->get(), absl::Milliseconds(args.timeout_ms));
  if (!s.ok()) return Fail(s);
  absl::StatusOr<ReplicationStatus> status = GetReplicationStatus(store->get());
  if (!status.ok()) return Fail(status.status());
  PrintLine(absl::StrCat("node ", args.node, " has applied JetStream sequence ",
                         status->applied_sequence, " of ", status->stream_last_sequence));
  return kExitOk;
}

}  // namespace

void AddReplicateCommands(CLI::App& app, Action* action) {
  CLI::App* repl = app.add_subcommand(
      "replicate", "Replicated stores over NATS JetStream (docs/replication.md)");
  repl->require_subcommand(1);
  auto init_args = std::make_shared<InitArgs>();
  CLI::App* init = repl->add_subcommand(
      "init",
      "Make NODE_DIR (new or empty) a node of the replicated store in a JetStream stream, "
      "creating the stream when it does not exist; every rill command then works on NODE_DIR, "
      "appends going through JetStream");
  init->add_option("NODE_DIR", init_args->node, "the node's directory")->required();
  init->add_option("SERVERS", init_args->servers,
                   "NATS URLs, comma-separated: nats://HOST:PORT[,nats://HOST:PORT...]")
      ->required();
  init->add_option("--stream", init_args->options.stream, "the JetStream stream (default: rill)");
  init->add_option("--subject", init_args->options.subject,
                   "the subject published to (default: rill.STREAM)");
  init->add_option("--replicas", init_args->options.replicas,
                   "replicas of a stream created now (default: 3)");
  init->add_option("--max-message-bytes", init_args->options.max_message_bytes,
                   "largest message published; below the servers' max_payload (default: 1 MiB)");
  init->add_option("--append-timeout-ms", init_args->append_timeout_ms,
                   "how long an append may wait for JetStream and the replica (default: 10000)");
  init->add_option("--group-commit-wait-us", init_args->group_commit_wait_us,
                   "how long the publisher may wait for the callers it just answered, to fill "
                   "its next message (0..100000, default: 1000)");
  init->add_option("--connect-timeout-ms", init_args->connect_timeout_ms,
                   "how long connecting may take (default: 2000)");
  init->add_option("--creds", init_args->options.credentials_file, "NATS credentials file");
  init->add_flag("--sync-replica", init_args->options.sync_replica,
                 "fsync the local replica's commits (default: not; after an OS crash the "
                 "replica is rebuilt from JetStream)");
  init->add_flag("--tls", init_args->options.tls, "require TLS");
  init->add_option("--tls-ca", init_args->options.tls_ca_file, "trusted CA certificates (PEM)");
  init->add_option("--tls-cert", init_args->options.tls_cert_file, "client certificate (PEM)");
  init->add_option("--tls-key", init_args->options.tls_key_file, "client key (PEM)");
  init->footer(
      "Example:\n  rill replicate init /var/lib/orders "
      "nats://10.0.0.1:4222,nats://10.0.0.2:4222 --stream orders --replicas 3");
  init->callback([init_args, action] { *action = [init_args] { return RunInit(*init_args); }; });

  auto push_args = std::make_shared<PushArgs>();
  CLI::App* push = repl->add_subcommand(
      "push",
      "Move STORE's log (an embedded store) into a new JetStream stream, every event with its "
      "position, version, id and time; then create nodes on the stream with replicate init");
  push->add_option("STORE", push_args->store, "the embedded store")->required();
  push->add_option("SERVERS", push_args->servers, "NATS URLs, comma-separated")->required();
  push->add_option("--stream", push_args->options.stream, "the new stream (default: rill)");
  push->add_option("--subject", push_args->options.subject, "its subject (default: rill.STREAM)");
  push->add_option("--replicas", push_args->options.replicas, "its replicas (default: 3)");
  push->add_option("--max-message-bytes", push_args->options.max_message_bytes,
                   "largest message published (default: 1 MiB)");
  push->footer(
      "Example:\n  rill replicate push /var/lib/orders nats://10.0.0.1:4222 --stream orders\n"
      "  rill replicate init /var/lib/orders-node nats://10.0.0.1:4222 --stream orders");
  push->callback([push_args, action] { *action = [push_args] { return RunPush(*push_args); }; });

  auto sync_args = std::make_shared<SyncArgs>();
  CLI::App* sync = repl->add_subcommand(
      "sync",
      "Catch NODE_DIR's replica up with everything JetStream holds now (a node's replica is fed "
      "while a process has it open for writing; read-only commands show it as it is)");
  sync->add_option("NODE_DIR", sync_args->node, "the node's directory")->required();
  sync->add_option("--timeout-ms", sync_args->timeout_ms, "give up after this long (60000)");
  sync->footer("Example:\n  rill replicate sync /var/lib/orders");
  sync->callback([sync_args, action] { *action = [sync_args] { return RunSync(*sync_args); }; });
}

}  // namespace rill::tool
