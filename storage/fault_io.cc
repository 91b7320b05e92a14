#include "storage/fault_io.h"

#include <algorithm>
#include <atomic>

#include <fmt/format.h>

namespace lockstep::storage {

struct FaultInjectingIo::Inode {
  // A write or size change made since the last successful sync.
  struct Pending {
    bool resize = false;
    std::uint64_t offset = 0;  // resize: the new size
    std::vector<std::byte> bytes;
  };

  std::vector<std::byte> data;     // what reads see
  std::vector<std::byte> durable;  // what a crash keeps for sure
  std::vector<Pending> pending;
  std::atomic<int> mappings{0};
};

struct FaultInjectingIo::DirOp {
  enum Kind { kCreate, kRemove, kRename } kind;
  std::string dir;
  std::string path;
  std::string to;
  std::shared_ptr<Inode> inode;
};

class FaultInjectingIo::FaultFile final : public File {
 public:
  FaultFile(std::string path, std::shared_ptr<Inode> node, std::uint64_t gen)
      : File(std::move(path)), inode(std::move(node)), generation(gen) {}
  std::shared_ptr<Inode> inode;
  std::uint64_t generation;
};

namespace {

class FaultMapping final : public Mapping {
 public:
  FaultMapping(std::shared_ptr<FaultInjectingIo::Inode> inode, std::size_t length);
  ~FaultMapping() override;

 private:
  std::shared_ptr<FaultInjectingIo::Inode> inode_;
};

class FaultLock final : public FileLock {
 public:
  FaultLock(std::function<void()> release) : release_(std::move(release)) {}
  ~FaultLock() override { release_(); }

 private:
  std::function<void()> release_;
};

std::string ParentOf(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string NameOf(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

void WriteInto(std::vector<std::byte>& target, std::uint64_t offset, ConstBytes bytes) {
  const std::size_t end = static_cast<std::size_t>(offset) + bytes.size();
  if (target.size() < end) target.resize(end);
  std::copy(bytes.begin(), bytes.end(), target.begin() + static_cast<std::ptrdiff_t>(offset));
}

void ApplyPending(std::vector<std::byte>& target, const FaultInjectingIo::Inode::Pending& p) {
  if (p.resize) {
    target.resize(static_cast<std::size_t>(p.offset));
  } else {
    WriteInto(target, p.offset, p.bytes);
  }
}

double Uniform(std::mt19937_64& rng) { return std::uniform_real_distribution<double>(0, 1)(rng); }

// Applies one unsynced write to `target` the way a crash may: whole, lost, or torn at a random
// byte with the torn part zero-filled, garbage, or left as it was.
void ApplyAtCrash(std::vector<std::byte>& target, const FaultInjectingIo::Inode::Pending& p,
                  std::mt19937_64& rng, const CrashModel& model) {
  const double r = Uniform(rng);
  if (p.resize) {
    if (r >= model.lose_resize) ApplyPending(target, p);
    return;
  }
  if (r < model.lose_write) return;
  if (r >= model.lose_write + model.tear_write || p.bytes.empty()) {
    ApplyPending(target, p);
    return;
  }
  const std::size_t keep = std::uniform_int_distribution<std::size_t>(0, p.bytes.size() - 1)(rng);
  WriteInto(target, p.offset, ConstBytes(p.bytes).first(keep));
  const int torn_as = std::uniform_int_distribution<int>(0, 2)(rng);
  if (torn_as == 2) return;  // the rest keeps its old content (or stays absent)
  std::vector<std::byte> rest(p.bytes.size() - keep);
  if (torn_as == 1) {
    for (auto& b : rest) b = static_cast<std::byte>(rng());
  }
  WriteInto(target, p.offset + keep, rest);
}

}  // namespace

FaultMapping::FaultMapping(std::shared_ptr<FaultInjectingIo::Inode> inode, std::size_t length)
    : inode_(std::move(inode)) {
  inode_->mappings.fetch_add(1);
  bytes_ = ConstBytes(inode_->data.data(), length);
}

FaultMapping::~FaultMapping() { inode_->mappings.fetch_sub(1); }

std::string_view OpKindName(OpKind kind) {
  switch (kind) {
    case OpKind::kAny:
      return "any";
    case OpKind::kCreate:
      return "create";
    case OpKind::kOpen:
      return "open";
    case OpKind::kSize:
      return "size";
    case OpKind::kAllocate:
      return "allocate";
    case OpKind::kWrite:
      return "write";
    case OpKind::kSync:
      return "sync";
    case OpKind::kMap:
      return "map";
    case OpKind::kRename:
      return "rename";
    case OpKind::kRemove:
      return "remove";
    case OpKind::kSyncDir:
      return "sync_dir";
    case OpKind::kCreateDir:
      return "create_dir";
    case OpKind::kListDir:
      return "list_dir";
    case OpKind::kLock:
      return "lock";
  }
  return "?";
}

FaultInjectingIo::FaultInjectingIo(std::uint64_t seed) : fault_rng_(seed) {}
FaultInjectingIo::~FaultInjectingIo() = default;

Status FaultInjectingIo::Begin(OpKind kind, const std::string& path, FaultKind* fault) {
  const std::uint64_t n = ++operations_;
  if (observer_) observer_(n, kind, path);
  const bool aimed = crash_at_next_ && kind == crash_at_next_->first &&
                     path.find(crash_at_next_->second) != std::string::npos;
  if (((crash_at_ != 0 && n >= crash_at_) || aimed) && !crashed_) {
    crashed_ = true;
    crash_point_ = {kind, path};
  }
  if (crashed_) {
    return base::IoError(fmt::format("{} {}: simulated crash", OpKindName(kind), path));
  }
  for (auto it = rules_.begin(); it != rules_.end(); ++it) {
    if (it->at_operation != 0 && it->at_operation != n) continue;
    if (n <= it->after_operation) continue;
    if (it->kind != OpKind::kAny && it->kind != kind) continue;
    if (!it->path_contains.empty() && path.find(it->path_contains) == std::string::npos) continue;
    *fault = it->fault;
    if (!it->sticky) rules_.erase(it);
    std::string message = fmt::format("{} {}: injected fault", OpKindName(kind), path);
    if (*fault == FaultKind::kEio) return base::IoError(message + " (EIO)");
    return base::ResourceExhausted(message + " (ENOSPC)");
  }
  return Status::Ok();
}

Result<FaultInjectingIo::Inode*> FaultInjectingIo::BeginOnFile(OpKind kind, File& file) {
  FaultKind fault{};
  LOCKSTEP_RETURN_IF_ERROR(Begin(kind, file.path(), &fault));
  Status status;
  Inode& inode = Live(file, &status);
  LOCKSTEP_RETURN_IF_ERROR(status);
  return &inode;
}

FaultInjectingIo::Inode& FaultInjectingIo::Live(File& file, Status* status) {
  auto& f = static_cast<FaultFile&>(file);
  if (f.generation != generation_) {
    *status = base::IoError(fmt::format("{}: file handle from before a restart", f.path()));
  }
  return *f.inode;
}

bool FaultInjectingIo::DirExistsLocked(const std::string& dir) const {
  return dir == "." || dir == "/" || dir.empty() || dirs_.count(dir) != 0;
}

Result<std::unique_ptr<File>> FaultInjectingIo::CreateFile(const std::string& path) {
  std::lock_guard lock(mu_);
  FaultKind fault{};
  LOCKSTEP_RETURN_IF_ERROR(Begin(OpKind::kCreate, path, &fault));
  if (!DirExistsLocked(ParentOf(path))) return base::NotFound("create " + path + ": no directory");
  if (files_.count(path) != 0 || dirs_.count(path) != 0) {
    return base::AlreadyExists("create " + path + ": File exists");
  }
  auto inode = std::make_shared<Inode>();
  files_[path] = inode;
  pending_dir_ops_.push_back(DirOp{DirOp::kCreate, ParentOf(path), path, "", inode});
  return std::unique_ptr<File>(std::make_unique<FaultFile>(path, inode, generation_));
}

Result<std::unique_ptr<File>> FaultInjectingIo::OpenFile(const std::string& path) {
  std::lock_guard lock(mu_);
  FaultKind fault{};
  LOCKSTEP_RETURN_IF_ERROR(Begin(OpKind::kOpen, path, &fault));
  auto it = files_.find(path);
  if (it == files_.end()) return base::NotFound("open " + path + ": No such file");
  return std::unique_ptr<File>(std::make_unique<FaultFile>(path, it->second, generation_));
}

Result<std::uint64_t> FaultInjectingIo::FileSize(File& file) {
  std::lock_guard lock(mu_);
  LOCKSTEP_ASSIGN_OR_RETURN(Inode * inode, BeginOnFile(OpKind::kSize, file));
  return static_cast<std::uint64_t>(inode->data.size());
}

Status FaultInjectingIo::Allocate(File& file, std::uint64_t bytes, Preallocation mode) {
  std::lock_guard lock(mu_);
  LOCKSTEP_ASSIGN_OR_RETURN(Inode * node, BeginOnFile(OpKind::kAllocate, file));
  Inode& inode = *node;
  LOCKSTEP_ASSERT(mode != Preallocation::kAdaptive);  // the log resolves it first
  if (inode.data.size() >= bytes) return Status::Ok();
  LOCKSTEP_ASSERT_MSG(inode.mappings.load() == 0 || bytes <= inode.data.capacity(),
                      "growing a mapped file would move its mapping");
  const std::uint64_t old_size = inode.data.size();
  inode.data.resize(static_cast<std::size_t>(bytes));
  if (mode == Preallocation::kFallocate) {
    inode.pending.push_back(Inode::Pending{true, bytes, {}});
  } else {
    inode.pending.push_back(
        Inode::Pending{false, old_size, std::vector<std::byte>(bytes - old_size)});
  }
  return Status::Ok();
}

Status FaultInjectingIo::WriteLocked(Inode& inode, std::uint64_t offset,
                                     std::span<const ConstBytes> parts, std::uint64_t limit) {
  std::vector<std::byte> bytes;
  for (ConstBytes p : parts) bytes.insert(bytes.end(), p.begin(), p.end());
  if (bytes.size() > limit) bytes.resize(static_cast<std::size_t>(limit));
  LOCKSTEP_ASSERT_MSG(inode.mappings.load() == 0 || offset + bytes.size() <= inode.data.capacity(),
                      "growing a mapped file would move its mapping");
  WriteInto(inode.data, offset, bytes);
  inode.pending.push_back(Inode::Pending{false, offset, std::move(bytes)});
  return Status::Ok();
}

Status FaultInjectingIo::Write(File& file, std::uint64_t offset,
                               std::span<const ConstBytes> parts) {
  std::lock_guard lock(mu_);
  FaultKind fault{};
  Status begun = Begin(OpKind::kWrite, file.path(), &fault);
  Status status;
  Inode& inode = Live(file, &status);
  if (!begun.ok()) {
    if (fault == FaultKind::kShortWrite && status.ok()) {
      std::uint64_t total = 0;
      for (ConstBytes p : parts) total += p.size();
      if (total > 0) {
        WriteLocked(inode, offset, parts,
                    std::uniform_int_distribution<std::uint64_t>(0, total - 1)(fault_rng_))
            .ok();
      }
    }
    return begun;
  }
  LOCKSTEP_RETURN_IF_ERROR(status);
  return WriteLocked(inode, offset, parts, UINT64_MAX);
}

Status FaultInjectingIo::Sync(File& file) {
  std::lock_guard lock(mu_);
  FaultKind fault{};
  Status begun = Begin(OpKind::kSync, file.path(), &fault);
  Status status;
  Inode& inode = Live(file, &status);
  if (!begun.ok()) {
    // Linux: a failed fdatasync marks the dirty pages clean; what they held never reaches the
    // disk, reads still return it, and the next fdatasync has nothing to report. A crash
    // (crashed_) changes nothing: the pending writes keep their chance of surviving.
    if (!crashed_ && status.ok()) inode.pending.clear();
    return begun;
  }
  LOCKSTEP_RETURN_IF_ERROR(status);
  for (const auto& p : inode.pending) ApplyPending(inode.durable, p);
  inode.pending.clear();
  return Status::Ok();
}

Result<std::shared_ptr<const Mapping>> FaultInjectingIo::Map(File& file, std::uint64_t bytes) {
  std::lock_guard lock(mu_);
  LOCKSTEP_ASSIGN_OR_RETURN(Inode * inode, BeginOnFile(OpKind::kMap, file));
  LOCKSTEP_ASSERT(bytes <= inode->data.size());
  auto& f = static_cast<FaultFile&>(file);
  return std::shared_ptr<const Mapping>(
      std::make_shared<FaultMapping>(f.inode, static_cast<std::size_t>(bytes)));
}

Status FaultInjectingIo::Rename(const std::string& from, const std::string& to) {
  std::lock_guard lock(mu_);
  FaultKind fault{};
  LOCKSTEP_RETURN_IF_ERROR(Begin(OpKind::kRename, from, &fault));
  LOCKSTEP_ASSERT_MSG(ParentOf(from) == ParentOf(to), "renames stay inside one directory");
  auto it = files_.find(from);
  if (it == files_.end()) return base::NotFound("rename " + from + ": No such file");
  auto inode = it->second;
  files_.erase(it);
  files_[to] = inode;
  pending_dir_ops_.push_back(DirOp{DirOp::kRename, ParentOf(from), from, to, inode});
  return Status::Ok();
}

Status FaultInjectingIo::Remove(const std::string& path) {
  std::lock_guard lock(mu_);
  FaultKind fault{};
  LOCKSTEP_RETURN_IF_ERROR(Begin(OpKind::kRemove, path, &fault));
  auto it = files_.find(path);
  if (it == files_.end()) return base::NotFound("remove " + path + ": No such file");
  files_.erase(it);
  pending_dir_ops_.push_back(DirOp{DirOp::kRemove, ParentOf(path), path, "", nullptr});
  return Status::Ok();
}

void FaultInjectingIo::ApplyDirOp(std::map<std::string, std::shared_ptr<Inode>>& files,
                                  const DirOp& op) const {
  switch (op.kind) {
    case DirOp::kCreate:
      files[op.path] = op.inode;
      break;
    case DirOp::kRemove:
      files.erase(op.path);
      break;
    case DirOp::kRename:
      files.erase(op.path);
      files[op.to] = op.inode;
      break;
  }
}

Status FaultInjectingIo::SyncDir(const std::string& dir) {
  std::lock_guard lock(mu_);
  FaultKind fault{};
  LOCKSTEP_RETURN_IF_ERROR(Begin(OpKind::kSyncDir, dir, &fault));
  if (!DirExistsLocked(dir)) return base::NotFound("sync directory " + dir);
  std::vector<DirOp> rest;
  for (auto& op : pending_dir_ops_) {
    if (op.dir == dir) {
      ApplyDirOp(durable_files_, op);
    } else {
      rest.push_back(std::move(op));
    }
  }
  pending_dir_ops_ = std::move(rest);
  return Status::Ok();
}

Status FaultInjectingIo::CreateDir(const std::string& dir) {
  std::lock_guard lock(mu_);
  FaultKind fault{};
  LOCKSTEP_RETURN_IF_ERROR(Begin(OpKind::kCreateDir, dir, &fault));
  if (files_.count(dir) != 0) return base::FailedPrecondition("create directory " + dir);
  if (!DirExistsLocked(ParentOf(dir))) return base::NotFound("create directory " + dir);
  dirs_.insert(dir);  // durable at once: CreateDir syncs the parent by contract
  return Status::Ok();
}

Result<std::vector<std::string>> FaultInjectingIo::ListDir(const std::string& dir) {
  std::lock_guard lock(mu_);
  FaultKind fault{};
  LOCKSTEP_RETURN_IF_ERROR(Begin(OpKind::kListDir, dir, &fault));
  if (!DirExistsLocked(dir)) return base::NotFound("list directory " + dir);
  std::vector<std::string> names;
  for (const auto& [path, inode] : files_) {
    if (ParentOf(path) == dir) names.push_back(NameOf(path));
  }
  for (const auto& d : dirs_) {
    if (ParentOf(d) == dir) names.push_back(NameOf(d));
  }
  return names;
}

Result<std::unique_ptr<FileLock>> FaultInjectingIo::LockFile(const std::string& path) {
  std::lock_guard lock(mu_);
  FaultKind fault{};
  LOCKSTEP_RETURN_IF_ERROR(Begin(OpKind::kLock, path, &fault));
  if (locks_.count(path) != 0) {
    return base::FailedPrecondition(path + " is locked by another opener");
  }
  if (files_.count(path) == 0) {
    auto inode = std::make_shared<Inode>();
    files_[path] = inode;
    pending_dir_ops_.push_back(DirOp{DirOp::kCreate, ParentOf(path), path, "", inode});
  }
  locks_.insert(path);
  const std::uint64_t generation = generation_;
  return std::unique_ptr<FileLock>(std::make_unique<FaultLock>([this, path, generation] {
    std::lock_guard l(mu_);
    if (generation_ == generation) locks_.erase(path);
  }));
}

std::uint64_t FaultInjectingIo::operations() const {
  std::lock_guard lock(mu_);
  return operations_;
}

void FaultInjectingIo::CrashAtOperation(std::uint64_t n) {
  std::lock_guard lock(mu_);
  crash_at_ = n;
  if (n == 0) crash_at_next_.reset();
}

void FaultInjectingIo::CrashAtNext(OpKind kind, std::string path_contains) {
  std::lock_guard lock(mu_);
  crash_at_next_.emplace(kind, std::move(path_contains));
}

bool FaultInjectingIo::crashed() const {
  std::lock_guard lock(mu_);
  return crashed_;
}

FaultInjectingIo::CrashPoint FaultInjectingIo::crash_point() const {
  std::lock_guard lock(mu_);
  return crashed_ ? crash_point_ : CrashPoint{};
}

void FaultInjectingIo::AddFault(FaultRule rule) {
  std::lock_guard lock(mu_);
  rules_.push_back(std::move(rule));
}

void FaultInjectingIo::ClearFaults() {
  std::lock_guard lock(mu_);
  rules_.clear();
}

void FaultInjectingIo::SetObserver(
    std::function<void(std::uint64_t, OpKind, const std::string&)> observer) {
  std::lock_guard lock(mu_);
  observer_ = std::move(observer);
}

void FaultInjectingIo::Restart(std::mt19937_64& rng, const CrashModel& model) {
  std::lock_guard lock(mu_);
  // Directory changes: per directory, a random prefix of the unsynced ones survives.
  std::map<std::string, std::vector<const DirOp*>> by_dir;
  for (const auto& op : pending_dir_ops_) by_dir[op.dir].push_back(&op);
  std::map<std::string, std::shared_ptr<Inode>> survivors = durable_files_;
  for (auto& [dir, ops] : by_dir) {
    const std::size_t keep = std::uniform_int_distribution<std::size_t>(0, ops.size())(rng);
    for (std::size_t i = 0; i < keep; ++i) ApplyDirOp(survivors, *ops[i]);
  }
  // File contents: durable bytes plus whatever the crash lets through of the unsynced writes.
  // Each surviving inode becomes a fresh one, so old mappings keep the dead process's view.
  std::map<const Inode*, std::shared_ptr<Inode>> rebuilt;
  files_.clear();
  for (auto& [path, old] : survivors) {
    auto& fresh = rebuilt[old.get()];
    if (!fresh) {
      fresh = std::make_shared<Inode>();
      fresh->durable = old->durable;
      for (const auto& p : old->pending) ApplyAtCrash(fresh->durable, p, rng, model);
      fresh->data = fresh->durable;
    }
    files_[path] = fresh;
  }
  durable_files_ = files_;
  pending_dir_ops_.clear();
  locks_.clear();
  rules_.clear();
  ++generation_;
  operations_ = 0;
  crash_at_ = 0;
  crash_at_next_.reset();
  crashed_ = false;
}

void FaultInjectingIo::RestartProcess() {
  std::lock_guard lock(mu_);
  locks_.clear();
  rules_.clear();
  ++generation_;
  operations_ = 0;
  crash_at_ = 0;
  crash_at_next_.reset();
  crashed_ = false;
}

bool FaultInjectingIo::Exists(const std::string& path) const {
  std::lock_guard lock(mu_);
  return files_.count(path) != 0;
}

Result<std::vector<std::byte>> FaultInjectingIo::ReadAll(const std::string& path) const {
  std::lock_guard lock(mu_);
  auto it = files_.find(path);
  if (it == files_.end()) return base::NotFound(path);
  return it->second->data;
}

Status FaultInjectingIo::Corrupt(const std::string& path, std::uint64_t offset, ConstBytes bytes) {
  std::lock_guard lock(mu_);
  auto it = files_.find(path);
  if (it == files_.end()) return base::NotFound(path);
  Inode& inode = *it->second;
  LOCKSTEP_ASSERT(offset + bytes.size() <= inode.data.size());
  WriteInto(inode.data, offset, bytes);
  if (offset + bytes.size() <= inode.durable.size()) WriteInto(inode.durable, offset, bytes);
  return Status::Ok();
}

std::uint64_t FaultInjectingIo::UnsyncedBytes() const {
  std::lock_guard lock(mu_);
  std::uint64_t total = 0;
  for (const auto& [path, inode] : files_) {
    for (const auto& p : inode->pending) total += p.bytes.size();
  }
  return total;
}

}  // namespace lockstep::storage
