//! [`FaultFs`]: a [`FileSystem`] wrapper that injects I/O errors and can
//! simulate a power loss, for crash and fault tests.
//!
//! # Injected errors
//!
//! Every operation that goes through a `FaultFs` (or through a file it
//! opened) is counted per [`FaultOp`] kind, from 1, whether it succeeds or
//! fails. [`FaultFs::fail_nth`] makes the n-th operation of a kind fail with a
//! chosen errno (`EIO`, `ENOSPC`, ...); [`FaultFs::fail_from`] makes it and
//! every later one fail, like a disk that stays full. A failed operation has no
//! effect: nothing is written, synced, renamed, created or removed.
//! [`FileSystem::list`] and [`FileSystem::exists`] are neither counted nor
//! faulted. A test
//! sweeps `n` from 1 to the count seen in a fault-free run
//! ([`FaultFs::op_count`]), checking after each run that the engine either
//! reported the error or recovered, and never returned wrong data.
//!
//! # Crash model
//!
//! `FaultFs` records what a power loss may undo, and [`FaultFs::crash`] applies
//! it to the real files of the wrapped file system, leaving the state a
//! machine would find on reboot. The model is the POSIX minimum, not the
//! friendlier behaviour of a particular file system:
//!
//! - **File contents.** Each file (tracked by identity, so it follows renames)
//!   has a *durable length*: the length at its last successful
//!   [`WritableFile::sync`]. On crash, bytes past it are dropped. With
//!   `tear`, a random prefix of those unsynced bytes is kept instead, as a
//!   torn write would. Truncation (by [`WritableFile::truncate`] or by
//!   [`FileSystem::create`] of an existing file) is taken to have reached the
//!   disk at once: the durable length drops to the new length, so data synced
//!   before a truncation never reappears. Files the `FaultFs` has not written
//!   are fully durable.
//! - **Directory entries.** A create of a new file, a rename or a remove is
//!   durable only once [`FileSystem::sync_dir`] has succeeded on the directory
//!   of every name it touched (both directories for a rename across
//!   directories). A file's `sync` does not make its name durable. On crash,
//!   changes not yet durable are undone newest first: created files are
//!   deleted, renames are moved back (restoring the durable contents of a file
//!   the rename replaced), removed files are recreated with their durable
//!   contents. Once a change is durable, so are all earlier changes to the same
//!   names, since it builds on them (a journalling file system commits them in
//!   order).
//! - **Images without stopping.** [`FaultFs::image_to`] writes the same
//!   post-crash state into a copy of the directory tree and leaves the real
//!   files and the workload alone; with [`FaultFs::set_sync_hook`], a test
//!   takes such an image at every sync point of a workload in one run.
//! - **After the crash** the `FaultFs` is "powered off": every later operation
//!   through it or any file it opened fails, so a lingering engine thread
//!   cannot write into the crash image. To "reboot", wrap the same inner file
//!   system in a new `FaultFs` (or use it directly).
//!
//! Limits: paths are compared as spelled (after dropping `.` components), not
//! resolved, so the engine must name a directory consistently; directories
//! made by [`FileSystem::create_dir_all`] are taken as durable; the contents
//! of a removed or replaced file are kept in memory until its directory is
//! synced (fine for tests); a failed `sync` leaves the durable length
//! unchanged, and a later successful one makes everything durable (the model
//! does not reproduce Linux forgetting dirty pages after a failed fsync).
//!
//! # Simulated syncs
//!
//! [`FaultFs::simulating_syncs`] makes a `FaultFs` that never syncs the
//! wrapped file system: syncs are counted, faulted and recorded in the
//! model as usual, but cost nothing. Crash images and fault sweeps need
//! only the model, and a test taking thousands of images should not be
//! paced by (or hang on) a slow disk's fsync. A real power loss under such
//! a `FaultFs` loses everything not yet written back.
//!
//! Files opened through a `FaultFs` report no raw descriptor, so every read
//! goes through [`RandomAccessFile::read_at`] and is counted, even in a
//! [`FileSystem::read_batch`] (which is served one read at a time).

use super::{FileSystem, RandomAccessFile, WritableFile};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A kind of file-system operation, for counting and fault injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// [`FileSystem::create`].
    Create,
    /// [`FileSystem::open_append`] and [`FileSystem::open_read`].
    Open,
    /// [`WritableFile::append`].
    Write,
    /// [`WritableFile::truncate`].
    Truncate,
    /// [`WritableFile::sync`].
    Sync,
    /// [`RandomAccessFile::read_at`], including each read of a batch.
    Read,
    /// [`FileSystem::rename`].
    Rename,
    /// [`FileSystem::remove`].
    Remove,
    /// [`FileSystem::sync_dir`].
    SyncDir,
    /// [`FileSystem::create_dir_all`].
    CreateDir,
}

impl FaultOp {
    /// Every kind, for sweeps.
    pub const ALL: [FaultOp; FAULT_OP_KINDS] = [
        FaultOp::Create,
        FaultOp::Open,
        FaultOp::Write,
        FaultOp::Truncate,
        FaultOp::Sync,
        FaultOp::Read,
        FaultOp::Rename,
        FaultOp::Remove,
        FaultOp::SyncDir,
        FaultOp::CreateDir,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Number of [`FaultOp`] kinds.
const FAULT_OP_KINDS: usize = 10;

// `FaultOp::index` indexes arrays of this length: keep `CreateDir` last.
const _: () = assert!(FaultOp::CreateDir as usize + 1 == FAULT_OP_KINDS);

/// A pending injected fault.
struct Rule {
    op: FaultOp,
    /// 1-based operation number at which the rule fires.
    n: u64,
    errno: i32,
    /// Also fire on every operation after the n-th.
    sticky: bool,
}

impl Rule {
    fn fires(&self, op: FaultOp, count: u64) -> bool {
        self.op == op && (count == self.n || (self.sticky && count > self.n))
    }
}

/// Identity of a file written through the `FaultFs`, stable across renames.
type FileId = u64;

/// A directory-entry change not yet made durable by `sync_dir`.
enum NameChange {
    /// A new file was created at `path`.
    Created { path: PathBuf },
    /// `from` was renamed to `to`; `replaced` holds the durable contents of
    /// the file previously at `to`, if any.
    Renamed {
        from: PathBuf,
        to: PathBuf,
        replaced: Option<Vec<u8>>,
    },
    /// The file at `path` was removed; `contents` are its durable bytes.
    Removed { path: PathBuf, contents: Vec<u8> },
}

impl NameChange {
    fn paths(&self) -> Vec<&Path> {
        match self {
            NameChange::Created { path } | NameChange::Removed { path, .. } => vec![path],
            NameChange::Renamed { from, to, .. } => vec![from, to],
        }
    }
}

/// A [`NameChange`] and the directories still to be synced before it is
/// durable.
struct PendingChange {
    change: NameChange,
    unsynced_dirs: Vec<PathBuf>,
}

/// Everything a `FaultFs` knows; one lock, held across each mutating
/// operation so the bookkeeping always matches the real files.
#[derive(Default)]
struct State {
    counts: [u64; FAULT_OP_KINDS],
    rules: Vec<Rule>,
    injected: u64,
    crashed: bool,
    next_id: FileId,
    /// Durable length of each file written through the `FaultFs`.
    durable_len: HashMap<FileId, u64>,
    /// Current name of each such file (normalised path).
    names: HashMap<PathBuf, FileId>,
    /// Directory-entry changes not yet durable, oldest first.
    pending: Vec<PendingChange>,
    /// See [`FaultFs::set_sync_hook`].
    sync_hook: Option<SyncHook>,
    /// Syncs stop at the model (see [`FaultFs::simulating_syncs`]).
    simulated_syncs: bool,
}

type SyncHook = Box<dyn FnMut(&SyncPoint<'_>) + Send>;

impl State {
    /// Counts one `op` and decides whether it fails. Every operation starts
    /// here.
    fn begin(&mut self, op: FaultOp) -> io::Result<()> {
        if self.crashed {
            return Err(powered_off());
        }
        let count = &mut self.counts[op.index()];
        *count += 1;
        let count = *count;
        let fired = self.rules.iter().find(|r| r.fires(op, count));
        if let Some(rule) = fired {
            let errno = rule.errno;
            self.injected += 1;
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(())
    }

    fn new_file(&mut self, path: PathBuf, durable_len: u64) -> FileId {
        let id = self.next_id;
        self.next_id += 1;
        self.durable_len.insert(id, durable_len);
        self.names.insert(path, id);
        id
    }

    fn set_durable_len(&mut self, id: FileId, len: u64) {
        self.durable_len.insert(id, len);
    }

    fn durable_len_of(&self, path: &Path) -> Option<u64> {
        let id = self.names.get(path)?;
        self.durable_len.get(id).copied()
    }

    fn record(&mut self, change: NameChange) {
        let mut unsynced_dirs: Vec<PathBuf> = change.paths().into_iter().map(parent).collect();
        unsynced_dirs.dedup();
        self.pending.push(PendingChange {
            change,
            unsynced_dirs,
        });
    }

    /// Runs the sync hook, if any, after a successful sync of kind `op`.
    fn synced(&mut self, op: FaultOp) {
        if let Some(mut hook) = self.sync_hook.take() {
            hook(&SyncPoint { state: self, op });
            self.sync_hook = Some(hook);
        }
    }

    /// Marks `dir` synced: changes with no unsynced directory left become
    /// durable, and with them every earlier change to the same names.
    fn dir_synced(&mut self, dir: &Path) {
        for p in &mut self.pending {
            p.unsynced_dirs.retain(|d| d != dir);
        }
        let mut pinned: HashSet<PathBuf> = HashSet::new();
        for p in self.pending.iter_mut().rev() {
            let paths = p.change.paths();
            if !p.unsynced_dirs.is_empty() && paths.iter().any(|path| pinned.contains(*path)) {
                p.unsynced_dirs.clear();
            }
            if p.unsynced_dirs.is_empty() {
                pinned.extend(paths.into_iter().map(Path::to_path_buf));
            }
        }
        self.pending.retain(|p| !p.unsynced_dirs.is_empty());
    }
}

fn powered_off() -> io::Error {
    io::Error::other("FaultFs: file system is powered off after a simulated crash")
}

/// `path` with `.` components and trailing separators dropped, so equal
/// spellings compare equal.
fn normalize(path: &Path) -> PathBuf {
    let p: PathBuf = path.components().collect();
    if p.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        p
    }
}

/// The directory holding `path` (already normalised).
fn parent(path: &Path) -> PathBuf {
    normalize(path.parent().unwrap_or(Path::new(".")))
}

/// A [`FileSystem`] that injects faults and simulates power loss; see the
/// module documentation for the model.
pub struct FaultFs {
    inner: Arc<dyn FileSystem>,
    state: Arc<Mutex<State>>,
}

impl FaultFs {
    /// Wraps `inner`. No faults are armed and nothing is pending.
    pub fn new(inner: Arc<dyn FileSystem>) -> Arc<FaultFs> {
        Arc::new(FaultFs {
            inner,
            state: Arc::new(Mutex::new(State::default())),
        })
    }

    /// Wraps `inner` like [`FaultFs::new`], but never syncs it: see
    /// "Simulated syncs" in the module documentation.
    pub fn simulating_syncs(inner: Arc<dyn FileSystem>) -> Arc<FaultFs> {
        let state = State {
            simulated_syncs: true,
            ..State::default()
        };
        Arc::new(FaultFs {
            inner,
            state: Arc::new(Mutex::new(state)),
        })
    }

    /// Makes the `n`-th operation of kind `op` (1-based, counted since this
    /// `FaultFs` was made) fail with `errno`. If `n` such operations have
    /// already run (or `n` is 0), the rule never fires.
    pub fn fail_nth(&self, op: FaultOp, n: u64, errno: i32) {
        self.arm(op, n, errno, false);
    }

    /// Makes the `n`-th operation of kind `op` and every later one fail with
    /// `errno`, until [`FaultFs::clear_faults`]. With `n` at or below the
    /// current count, the very next operation fails.
    pub fn fail_from(&self, op: FaultOp, n: u64, errno: i32) {
        self.arm(op, n, errno, true);
    }

    fn arm(&self, op: FaultOp, n: u64, errno: i32, sticky: bool) {
        self.state.lock().rules.push(Rule {
            op,
            n,
            errno,
            sticky,
        });
    }

    /// Disarms every fault. Counters keep running.
    pub fn clear_faults(&self) {
        self.state.lock().rules.clear();
    }

    /// Operations of kind `op` attempted so far, failed ones included.
    pub fn op_count(&self, op: FaultOp) -> u64 {
        self.state.lock().counts[op.index()]
    }

    /// Operations failed by an armed fault so far; lets a sweep notice that
    /// `n` has passed the last operation of the workload.
    pub fn faults_injected(&self) -> u64 {
        self.state.lock().injected
    }

    /// True once [`FaultFs::crash`] has been called.
    pub fn is_crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Simulates a power loss: rewrites the real files of the inner file
    /// system to a state a reboot could find (see the module documentation),
    /// then powers this `FaultFs` off. With `tear`, each file keeps a random
    /// prefix of its unsynced bytes, drawn from `seed`; without it, exactly
    /// its durable bytes. Fails if called twice or if the inner file system
    /// fails while the image is being made.
    pub fn crash(&self, tear: bool, seed: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        if state.crashed {
            return Err(powered_off());
        }
        state.crashed = true;
        let target = ImageTarget {
            fs: &*self.inner,
            map: &|path| Ok(path.to_path_buf()),
            sync: true,
        };
        state.apply_power_loss(&target, tear, seed)?;
        state.pending.clear();
        state.names.clear();
        state.durable_len.clear();
        Ok(())
    }

    /// Writes to `dest` the state a power loss right now would leave of the
    /// directory tree `root`, without touching the real files or stopping
    /// the workload: `root` is copied as it is on disk, then the crash is
    /// applied to the copy. `root` must be where the engine's files are, on
    /// the local file system. `tear` and `seed` are as for
    /// [`FaultFs::crash`].
    pub fn image_to(&self, root: &Path, dest: &Path, tear: bool, seed: u64) -> io::Result<()> {
        let state = self.state.lock();
        SyncPoint {
            state: &state,
            op: FaultOp::Sync,
        }
        .image_to(root, dest, tear, seed)
    }

    /// Calls `hook` right after every successful [`WritableFile::sync`] and
    /// [`FileSystem::sync_dir`], while every other operation waits: the
    /// points where a crash image is worth taking (see
    /// [`SyncPoint::image_to`]). The hook must not use this `FaultFs`.
    pub fn set_sync_hook(&self, hook: impl FnMut(&SyncPoint<'_>) + Send + 'static) {
        self.state.lock().sync_hook = Some(Box::new(hook));
    }

    /// Removes the sync hook.
    pub fn clear_sync_hook(&self) {
        self.state.lock().sync_hook = None;
    }

    /// The bytes of `path` a crash would leave: all of an untracked file, the
    /// durable prefix of a tracked one.
    fn durable_contents(&self, state: &State, path: &Path) -> io::Result<Vec<u8>> {
        let mut bytes = self.inner.read_all(path)?;
        if let Some(len) = state.durable_len_of(path) {
            bytes.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        }
        Ok(bytes)
    }

    fn writable(&self, inner: Box<dyn WritableFile>, id: FileId) -> Box<dyn WritableFile> {
        Box::new(FaultWritable {
            inner,
            id,
            state: Arc::clone(&self.state),
        })
    }
}

impl FileSystem for FaultFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.state.lock().begin(FaultOp::CreateDir)?;
        self.inner.create_dir_all(path)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let path = normalize(path);
        let mut state = self.state.lock();
        state.begin(FaultOp::Create)?;
        let existed = self.inner.exists(&path);
        let file = self.inner.create(&path)?;
        if !existed {
            state.record(NameChange::Created { path: path.clone() });
        }
        // Creating over an existing file truncates it; see the crash model.
        let id = match state.names.get(&path) {
            Some(&id) => {
                state.set_durable_len(id, 0);
                id
            }
            None => state.new_file(path, 0),
        };
        Ok(self.writable(file, id))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let path = normalize(path);
        let mut state = self.state.lock();
        state.begin(FaultOp::Open)?;
        let file = self.inner.open_append(&path)?;
        let id = match state.names.get(&path) {
            Some(&id) => id,
            // Not written through us: on disk already, so durable.
            None => state.new_file(path, file.len()),
        };
        Ok(self.writable(file, id))
    }

    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn RandomAccessFile>> {
        self.state.lock().begin(FaultOp::Open)?;
        let inner = self.inner.open_read(path)?;
        Ok(Arc::new(FaultReadable {
            inner,
            state: Arc::clone(&self.state),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (normalize(from), normalize(to));
        let mut state = self.state.lock();
        state.begin(FaultOp::Rename)?;
        if from == to {
            // Renaming a file onto itself changes nothing.
            return self.inner.rename(&from, &to);
        }
        let replaced = if self.inner.exists(&to) {
            Some(self.durable_contents(&state, &to)?)
        } else {
            None
        };
        // An untracked source is durable whole; measure it before it moves.
        let source_len = if state.names.contains_key(&from) {
            0
        } else {
            self.inner.open_read(&from)?.len()
        };
        self.inner.rename(&from, &to)?;
        state.names.remove(&to);
        match state.names.remove(&from) {
            Some(id) => {
                state.names.insert(to.clone(), id);
            }
            None => {
                state.new_file(to.clone(), source_len);
            }
        }
        state.record(NameChange::Renamed { from, to, replaced });
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let path = normalize(path);
        let mut state = self.state.lock();
        state.begin(FaultOp::Remove)?;
        let contents = self.durable_contents(&state, &path)?;
        self.inner.remove(&path)?;
        state.names.remove(&path);
        state.record(NameChange::Removed { path, contents });
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        if self.state.lock().crashed {
            return Err(powered_off());
        }
        self.inner.list(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.begin(FaultOp::SyncDir)?;
        if !state.simulated_syncs {
            self.inner.sync_dir(dir)?;
        }
        state.dir_synced(&normalize(dir));
        state.synced(FaultOp::SyncDir);
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        "fault"
    }
}

/// Where a simulated power loss is applied: the real files
/// ([`FaultFs::crash`]) or a copy of them ([`SyncPoint::image_to`]).
struct ImageTarget<'a> {
    fs: &'a dyn FileSystem,
    /// Where the file the engine knows as a path is in the target.
    map: &'a dyn Fn(&Path) -> io::Result<PathBuf>,
    /// Sync what is rewritten (pointless for a copy that is only read).
    sync: bool,
}

impl ImageTarget<'_> {
    /// Recreates a file whose contents were durable when it was replaced or
    /// removed.
    fn write_durable(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        let mut file = self.fs.create(&(self.map)(path)?)?;
        file.append(contents)?;
        if self.sync {
            file.sync()?;
        }
        Ok(())
    }

    /// Cuts `path` back to its durable length, keeping a random prefix of
    /// the rest when `tear` is given.
    fn drop_unsynced(
        &self,
        path: &Path,
        durable_len: u64,
        tear: Option<&mut rand::rngs::StdRng>,
    ) -> io::Result<()> {
        let path = (self.map)(path)?;
        if !self.fs.exists(&path) {
            return Ok(());
        }
        let len = self.fs.open_read(&path)?.len();
        if len <= durable_len {
            return Ok(());
        }
        let kept = tear.map_or(0, |rng| rng.gen_range(0..=len - durable_len));
        let mut file = self.fs.open_append(&path)?;
        file.truncate(durable_len + kept)?;
        if self.sync {
            file.sync()?;
        }
        Ok(())
    }

    /// Reverts one directory-entry change; `names` follows it.
    fn undo(&self, names: &mut HashMap<PathBuf, FileId>, change: &NameChange) -> io::Result<()> {
        match change {
            NameChange::Created { path } => {
                let at = (self.map)(path)?;
                if self.fs.exists(&at) {
                    self.fs.remove(&at)?;
                }
                names.remove(path);
            }
            NameChange::Renamed { from, to, replaced } => {
                self.fs.rename(&(self.map)(to)?, &(self.map)(from)?)?;
                if let Some(id) = names.remove(to) {
                    names.insert(from.clone(), id);
                }
                if let Some(contents) = replaced {
                    self.write_durable(to, contents)?;
                }
            }
            NameChange::Removed { path, contents } => {
                self.write_durable(path, contents)?;
                names.remove(path);
            }
        }
        Ok(())
    }
}

impl State {
    /// Applies to `target` what a power loss now would do: undoes the
    /// directory changes not yet durable, newest first, then cuts each file
    /// to its durable length (or a torn prefix of its unsynced bytes).
    fn apply_power_loss(&self, target: &ImageTarget<'_>, tear: bool, seed: u64) -> io::Result<()> {
        let mut names = self.names.clone();
        for p in self.pending.iter().rev() {
            target.undo(&mut names, &p.change)?;
        }
        let mut files: Vec<(PathBuf, u64)> = names
            .iter()
            .filter_map(|(path, id)| Some((path.clone(), *self.durable_len.get(id)?)))
            .collect();
        // Sorted so the same seed tears the same way on every run.
        files.sort();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for (path, durable_len) in files {
            let tear_rng = if tear { Some(&mut rng) } else { None };
            target.drop_unsynced(&path, durable_len, tear_rng)?;
        }
        Ok(())
    }
}

/// The moment after a successful sync, as seen by a hook set with
/// [`FaultFs::set_sync_hook`]: nothing else happens on the file system until
/// the hook returns.
pub struct SyncPoint<'a> {
    state: &'a State,
    op: FaultOp,
}

impl SyncPoint<'_> {
    /// The sync that just succeeded: [`FaultOp::Sync`] or
    /// [`FaultOp::SyncDir`].
    pub fn op(&self) -> FaultOp {
        self.op
    }

    /// Writes to `dest` (which must not exist) the state a power loss at
    /// this point would leave of the tree `root`; see [`FaultFs::image_to`].
    pub fn image_to(&self, root: &Path, dest: &Path, tear: bool, seed: u64) -> io::Result<()> {
        if self.state.crashed {
            return Err(powered_off());
        }
        copy_tree(root, dest)?;
        let root = normalize(root);
        let map = |path: &Path| match path.strip_prefix(&root) {
            Ok(rel) => Ok(dest.join(rel)),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is outside the imaged tree", path.display()),
            )),
        };
        let os = super::OsFs::default();
        let target = ImageTarget {
            fs: &os,
            map: &map,
            sync: false,
        };
        self.state.apply_power_loss(&target, tear, seed)
    }
}

/// Copies the directory tree `from` to `to`, which must not exist.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

/// A file opened for appending through a [`FaultFs`].
struct FaultWritable {
    inner: Box<dyn WritableFile>,
    id: FileId,
    state: Arc<Mutex<State>>,
}

impl WritableFile for FaultWritable {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        state.begin(FaultOp::Write)?;
        self.inner.append(data)
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut state = self.state.lock();
        state.begin(FaultOp::Sync)?;
        if !state.simulated_syncs {
            self.inner.sync()?;
        }
        state.set_durable_len(self.id, self.inner.len());
        state.synced(FaultOp::Sync);
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        state.begin(FaultOp::Truncate)?;
        self.inner.truncate(len)?;
        let durable = state.durable_len.get(&self.id).copied().unwrap_or(0);
        state.set_durable_len(self.id, durable.min(len));
        Ok(())
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }
}

/// A file opened for reading through a [`FaultFs`]. Reports no raw
/// descriptor, so batched reads cannot bypass the fault checks.
struct FaultReadable {
    inner: Arc<dyn RandomAccessFile>,
    state: Arc<Mutex<State>>,
}

impl RandomAccessFile for FaultReadable {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.state.lock().begin(FaultOp::Read)?;
        self.inner.read_at(offset, buf)
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn drop_page_cache(&self) -> io::Result<()> {
        self.inner.drop_page_cache()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{OsFs, ReadOp};
    use proptest::prelude::*;

    fn setup() -> (tempfile::TempDir, Arc<dyn FileSystem>, Arc<FaultFs>) {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn FileSystem> = Arc::new(OsFs::default());
        let fs = FaultFs::new(Arc::clone(&inner));
        (dir, inner, fs)
    }

    /// Creates `path` with `bytes`, synced, with its name made durable.
    fn write_durable(fs: &FaultFs, path: &Path, bytes: &[u8]) {
        let mut f = fs.create(path).unwrap();
        f.append(bytes).unwrap();
        f.sync().unwrap();
        fs.sync_dir(path.parent().unwrap()).unwrap();
    }

    fn read(inner: &Arc<dyn FileSystem>, path: &Path) -> Vec<u8> {
        inner.read_all(path).unwrap()
    }

    #[test]
    fn fails_only_the_nth_write() {
        let (dir, inner, fs) = setup();
        let path = dir.path().join("f");
        let mut f = fs.create(&path).unwrap();
        fs.fail_nth(FaultOp::Write, 2, libc::ENOSPC);
        f.append(b"one").unwrap();
        let err = f.append(b"two").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        f.append(b"three").unwrap();
        assert_eq!(fs.op_count(FaultOp::Write), 3);
        assert_eq!(fs.faults_injected(), 1);
        assert_eq!(read(&inner, &path), b"onethree");
    }

    #[test]
    fn op_kinds_index_distinct_counters() {
        let indices: HashSet<usize> = FaultOp::ALL.iter().map(|op| op.index()).collect();
        assert_eq!(indices, (0..FAULT_OP_KINDS).collect());
    }

    #[test]
    fn rule_for_a_past_operation_never_fires() {
        let (dir, _inner, fs) = setup();
        let mut f = fs.create(&dir.path().join("f")).unwrap();
        f.append(b"a").unwrap();
        fs.fail_nth(FaultOp::Write, 1, libc::EIO);
        fs.fail_nth(FaultOp::Write, 0, libc::EIO);
        f.append(b"b").unwrap();
        assert_eq!(fs.faults_injected(), 0);
    }

    #[test]
    fn fail_from_is_sticky_until_cleared() {
        let (dir, _inner, fs) = setup();
        let mut f = fs.create(&dir.path().join("f")).unwrap();
        fs.fail_from(FaultOp::Sync, 2, libc::EIO);
        f.sync().unwrap();
        for _ in 0..3 {
            assert_eq!(f.sync().unwrap_err().raw_os_error(), Some(libc::EIO));
        }
        fs.clear_faults();
        f.sync().unwrap();
        assert_eq!(fs.op_count(FaultOp::Sync), 5);
        assert_eq!(fs.faults_injected(), 3);
    }

    /// Runs one operation of `op` against `fs` in `dir`, where a durable
    /// file `a` holding "abc" exists.
    fn do_op(fs: &FaultFs, dir: &Path, op: FaultOp) -> io::Result<()> {
        let a = dir.join("a");
        match op {
            FaultOp::Create => fs.create(&dir.join("new")).map(drop),
            FaultOp::Open => fs.open_read(&a).map(drop),
            FaultOp::Write => fs.open_append(&a).and_then(|mut f| f.append(b"x")),
            FaultOp::Truncate => fs.open_append(&a).and_then(|mut f| f.truncate(1)),
            FaultOp::Sync => fs.open_append(&a).and_then(|mut f| f.sync()),
            FaultOp::Read => fs.open_read(&a).and_then(|f| f.read_at(0, &mut [0; 3])),
            FaultOp::Rename => fs.rename(&a, &dir.join("b")),
            FaultOp::Remove => fs.remove(&a),
            FaultOp::SyncDir => fs.sync_dir(dir),
            FaultOp::CreateDir => fs.create_dir_all(&dir.join("sub")),
        }
    }

    #[test]
    fn every_kind_fails_without_effect() {
        for op in FaultOp::ALL {
            let (dir, inner, fs) = setup();
            write_durable(&fs, &dir.path().join("a"), b"abc");
            let before = inner.list(dir.path()).unwrap();
            let n = fs.op_count(op) + 1;
            fs.fail_nth(op, n, libc::EIO);
            let err = do_op(&fs, dir.path(), op).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EIO), "{op:?}");
            assert_eq!(fs.op_count(op), n, "{op:?}");
            assert_eq!(inner.list(dir.path()).unwrap(), before, "{op:?}");
            assert_eq!(read(&inner, &dir.path().join("a")), b"abc", "{op:?}");
            // The next operation of the kind succeeds.
            do_op(&fs, dir.path(), op).unwrap();
        }
    }

    #[test]
    fn batched_reads_are_counted_and_faulted() {
        let (dir, _inner, fs) = setup();
        let path = dir.path().join("a");
        write_durable(&fs, &path, b"0123456789");
        let file = fs.open_read(&path).unwrap();
        assert!(file.raw_fd().is_none());
        let (mut x, mut y) = ([0u8; 4], [0u8; 4]);
        fs.fail_nth(FaultOp::Read, 2, libc::EIO);
        let mut ops = [
            ReadOp {
                file: file.as_ref(),
                offset: 0,
                buf: &mut x,
            },
            ReadOp {
                file: file.as_ref(),
                offset: 4,
                buf: &mut y,
            },
        ];
        let err = fs.read_batch(&mut ops).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        fs.read_batch(&mut ops).unwrap();
        assert_eq!(fs.op_count(FaultOp::Read), 4);
        assert_eq!((&x, &y), (b"0123", b"4567"));
    }

    #[test]
    fn crash_drops_unsynced_bytes() {
        let (dir, inner, fs) = setup();
        let path = dir.path().join("wal");
        let mut f = fs.create(&path).unwrap();
        fs.sync_dir(dir.path()).unwrap();
        f.append(b"synced").unwrap();
        f.sync().unwrap();
        f.append(b"lost").unwrap();
        fs.crash(false, 0).unwrap();
        assert_eq!(read(&inner, &path), b"synced");
    }

    #[test]
    fn crash_with_tear_keeps_a_seeded_prefix_of_unsynced_bytes() {
        let mut kept = HashSet::new();
        for seed in 0..16 {
            let (dir, inner, fs) = setup();
            let path = dir.path().join("wal");
            write_durable(&fs, &path, b"head");
            let mut f = fs.open_append(&path).unwrap();
            f.append(b"0123456789").unwrap();
            fs.crash(true, seed).unwrap();
            let got = read(&inner, &path);
            assert!(b"head0123456789".starts_with(&got), "{got:?}");
            assert!(got.len() >= 4);
            kept.insert(got.len());
        }
        assert!(kept.len() > 1, "tearing should vary with the seed");
    }

    #[test]
    fn crash_deletes_file_whose_create_was_not_dir_synced() {
        let (dir, inner, fs) = setup();
        let path = dir.path().join("f");
        let mut f = fs.create(&path).unwrap();
        f.append(b"data").unwrap();
        f.sync().unwrap();
        fs.crash(false, 0).unwrap();
        assert!(!inner.exists(&path));
    }

    #[test]
    fn crash_undoes_rename_without_sync_dir() {
        let (dir, inner, fs) = setup();
        let (tmp, dst) = (dir.path().join("tmp"), dir.path().join("dst"));
        write_durable(&fs, &tmp, b"new");
        fs.rename(&tmp, &dst).unwrap();
        fs.crash(false, 0).unwrap();
        assert!(!inner.exists(&dst));
        assert_eq!(read(&inner, &tmp), b"new");
    }

    #[test]
    fn crash_keeps_rename_after_sync_dir() {
        let (dir, inner, fs) = setup();
        let (tmp, dst) = (dir.path().join("tmp"), dir.path().join("dst"));
        write_durable(&fs, &tmp, b"new");
        fs.rename(&tmp, &dst).unwrap();
        fs.sync_dir(dir.path()).unwrap();
        fs.crash(false, 0).unwrap();
        assert!(!inner.exists(&tmp));
        assert_eq!(read(&inner, &dst), b"new");
    }

    #[test]
    fn crash_restores_file_replaced_by_unsynced_rename() {
        let (dir, inner, fs) = setup();
        let (tmp, current) = (dir.path().join("tmp"), dir.path().join("CURRENT"));
        write_durable(&fs, &current, b"old");
        write_durable(&fs, &tmp, b"new");
        fs.rename(&tmp, &current).unwrap();
        assert_eq!(read(&inner, &current), b"new");
        fs.crash(false, 0).unwrap();
        assert_eq!(read(&inner, &current), b"old");
        assert_eq!(read(&inner, &tmp), b"new");
    }

    #[test]
    fn renamed_file_keeps_only_its_synced_bytes() {
        let (dir, inner, fs) = setup();
        let (tmp, dst) = (dir.path().join("tmp"), dir.path().join("dst"));
        let mut f = fs.create(&tmp).unwrap();
        f.append(b"never synced").unwrap();
        fs.rename(&tmp, &dst).unwrap();
        fs.sync_dir(dir.path()).unwrap();
        fs.crash(false, 0).unwrap();
        assert_eq!(read(&inner, &dst), b"");
    }

    #[test]
    fn crash_restores_removed_file_with_its_durable_bytes() {
        let (dir, inner, fs) = setup();
        let path = dir.path().join("a");
        write_durable(&fs, &path, b"aaa");
        let mut f = fs.open_append(&path).unwrap();
        f.append(b"unsynced").unwrap();
        fs.remove(&path).unwrap();
        fs.crash(false, 0).unwrap();
        assert_eq!(read(&inner, &path), b"aaa");
    }

    #[test]
    fn crash_keeps_removal_after_sync_dir() {
        let (dir, inner, fs) = setup();
        let path = dir.path().join("a");
        write_durable(&fs, &path, b"aaa");
        fs.remove(&path).unwrap();
        fs.sync_dir(dir.path()).unwrap();
        fs.crash(false, 0).unwrap();
        assert!(!inner.exists(&path));
    }

    #[test]
    fn truncation_is_durable_and_drops_later_unsynced_appends() {
        let (dir, inner, fs) = setup();
        let path = dir.path().join("log");
        write_durable(&fs, &path, b"0123456789");
        let mut f = fs.open_append(&path).unwrap();
        f.truncate(4).unwrap();
        f.append(b"xyz").unwrap();
        fs.crash(false, 0).unwrap();
        assert_eq!(read(&inner, &path), b"0123");
    }

    #[test]
    fn create_over_existing_file_truncates_durably() {
        let (dir, inner, fs) = setup();
        let path = dir.path().join("f");
        write_durable(&fs, &path, b"old contents");
        let mut f = fs.create(&path).unwrap();
        f.append(b"new").unwrap();
        fs.crash(false, 0).unwrap();
        assert_eq!(read(&inner, &path), b"");
    }

    #[test]
    fn untracked_file_keeps_contents_but_not_unsynced_appends() {
        let (dir, inner, fs) = setup();
        let path = dir.path().join("old");
        std::fs::write(&path, b"before").unwrap();
        let mut f = fs.open_append(&path).unwrap();
        f.append(b" after").unwrap();
        fs.crash(false, 0).unwrap();
        assert_eq!(read(&inner, &path), b"before");
    }

    #[test]
    fn rename_across_directories_needs_both_synced() {
        for sync_both in [false, true] {
            let (dir, inner, fs) = setup();
            let (src_dir, dst_dir) = (dir.path().join("src"), dir.path().join("dst"));
            fs.create_dir_all(&src_dir).unwrap();
            fs.create_dir_all(&dst_dir).unwrap();
            let (from, to) = (src_dir.join("f"), dst_dir.join("f"));
            write_durable(&fs, &from, b"x");
            fs.rename(&from, &to).unwrap();
            fs.sync_dir(&dst_dir).unwrap();
            if sync_both {
                fs.sync_dir(&src_dir).unwrap();
            }
            fs.crash(false, 0).unwrap();
            assert_eq!(inner.exists(&to), sync_both);
            assert_eq!(inner.exists(&from), !sync_both);
        }
    }

    #[test]
    fn powered_off_after_crash() {
        let (dir, inner, fs) = setup();
        let path = dir.path().join("f");
        write_durable(&fs, &path, b"abc");
        let mut w = fs.open_append(&path).unwrap();
        let r = fs.open_read(&path).unwrap();
        fs.crash(false, 0).unwrap();
        assert!(fs.is_crashed());
        assert!(w.append(b"late").is_err());
        assert!(w.sync().is_err());
        assert!(r.read_at(0, &mut [0; 3]).is_err());
        assert!(fs.create(&dir.path().join("g")).is_err());
        assert!(fs.list(dir.path()).is_err());
        assert!(fs.crash(false, 0).is_err());
        assert_eq!(read(&inner, &path), b"abc");
        // A new FaultFs over the same files is the rebooted machine.
        let rebooted = FaultFs::new(inner);
        assert_eq!(rebooted.read_all(&path).unwrap(), b"abc");
    }

    #[test]
    fn sync_hook_sees_every_sync_and_can_take_images() {
        let (dir, _inner, fs) = setup();
        let images = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let dest = images.path().to_path_buf();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        fs.set_sync_hook(move |point| {
            let mut log = log.lock();
            let image = dest.join(log.len().to_string());
            point.image_to(&root, &image, false, 0).unwrap();
            log.push((
                point.op(),
                std::fs::read(image.join("f")).unwrap_or_default(),
            ));
        });
        let mut f = fs.create(&dir.path().join("f")).unwrap();
        f.append(b"one").unwrap();
        f.sync().unwrap();
        fs.sync_dir(dir.path()).unwrap();
        f.append(b"two").unwrap();
        f.sync().unwrap();
        fs.clear_sync_hook();
        f.sync().unwrap();
        let seen = seen.lock();
        // The first image is before the name is durable: no file at all.
        assert_eq!(
            *seen,
            vec![
                (FaultOp::Sync, Vec::new()),
                (FaultOp::SyncDir, b"one".to_vec()),
                (FaultOp::Sync, b"onetwo".to_vec()),
            ]
        );
    }

    #[test]
    fn simulated_syncs_reach_the_model_but_not_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FaultFs::new(Arc::new(OsFs::default()));
        let fs = FaultFs::simulating_syncs(disk.clone());
        let path = dir.path().join("f");
        let mut f = fs.create(&path).unwrap();
        f.append(b"kept").unwrap();
        f.sync().unwrap();
        fs.sync_dir(dir.path()).unwrap();
        f.append(b" lost").unwrap();
        assert_eq!(fs.op_count(FaultOp::Sync), 1);
        assert_eq!(fs.op_count(FaultOp::SyncDir), 1);
        assert_eq!(disk.op_count(FaultOp::Sync), 0);
        assert_eq!(disk.op_count(FaultOp::SyncDir), 0);
        // The model still knows what a power loss keeps.
        fs.crash(false, 0).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
    }

    #[derive(Clone, Debug)]
    enum FileStep {
        Append(Vec<u8>),
        Sync,
    }

    fn file_step() -> impl Strategy<Value = FileStep> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(FileStep::Append),
            Just(FileStep::Sync),
        ]
    }

    #[derive(Clone, Debug)]
    enum NameStep {
        Create(usize, Vec<u8>),
        Rename(usize, usize),
        Remove(usize),
        SyncDir,
    }

    const NAMES: usize = 4;

    fn name_step() -> impl Strategy<Value = NameStep> {
        prop_oneof![
            (0..NAMES, proptest::collection::vec(any::<u8>(), 0..16))
                .prop_map(|(i, b)| NameStep::Create(i, b)),
            (0..NAMES, 0..NAMES).prop_map(|(a, b)| NameStep::Rename(a, b)),
            (0..NAMES).prop_map(NameStep::Remove),
            Just(NameStep::SyncDir),
        ]
    }

    /// Name -> contents of every file in `dir`.
    fn snapshot(inner: &Arc<dyn FileSystem>, dir: &Path) -> Vec<(String, Vec<u8>)> {
        let names = inner.list(dir).unwrap();
        names
            .into_iter()
            .map(|n| {
                let bytes = read(inner, &dir.join(&n));
                (n, bytes)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A crash leaves a prefix of what was written, at least as long as
        /// what was synced (exactly that without tearing).
        #[test]
        fn crash_leaves_a_prefix_covering_synced_bytes(
            steps in proptest::collection::vec(file_step(), 0..24),
            tear in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let (dir, inner, fs) = setup();
            let path = dir.path().join("f");
            let mut f = fs.create(&path).unwrap();
            fs.sync_dir(dir.path()).unwrap();
            let (mut written, mut synced) = (Vec::new(), 0);
            for step in steps {
                match step {
                    FileStep::Append(b) => {
                        f.append(&b).unwrap();
                        written.extend_from_slice(&b);
                    }
                    FileStep::Sync => {
                        f.sync().unwrap();
                        synced = written.len();
                    }
                }
            }
            fs.crash(tear, seed).unwrap();
            let got = read(&inner, &path);
            prop_assert!(written.starts_with(&got));
            prop_assert!(got.len() >= synced);
            if !tear {
                prop_assert_eq!(got.len(), synced);
            }
        }

        /// Directory changes: a crash right after a sync of everything changes
        /// nothing, and a crash before it gives back the last synced state.
        #[test]
        fn crash_returns_to_last_synced_directory_state(
            steps in proptest::collection::vec(name_step(), 0..24),
            sync_at_end in any::<bool>(),
        ) {
            let (dir, inner, fs) = setup();
            let name = |i: usize| dir.path().join(format!("n{i}"));
            let mut last_synced = snapshot(&inner, dir.path());
            for step in steps {
                match step {
                    // Only new names: creating over a file changes its
                    // contents, not the directory.
                    NameStep::Create(i, b) => {
                        if inner.exists(&name(i)) {
                            continue;
                        }
                        let mut f = fs.create(&name(i)).unwrap();
                        f.append(&b).unwrap();
                        f.sync().unwrap();
                    }
                    NameStep::Rename(a, b) => {
                        if inner.exists(&name(a)) {
                            fs.rename(&name(a), &name(b)).unwrap();
                        }
                    }
                    NameStep::Remove(i) => {
                        if inner.exists(&name(i)) {
                            fs.remove(&name(i)).unwrap();
                        }
                    }
                    NameStep::SyncDir => {
                        fs.sync_dir(dir.path()).unwrap();
                        last_synced = snapshot(&inner, dir.path());
                    }
                }
            }
            if sync_at_end {
                fs.sync_dir(dir.path()).unwrap();
                last_synced = snapshot(&inner, dir.path());
            }
            fs.crash(false, 0).unwrap();
            prop_assert_eq!(snapshot(&inner, dir.path()), last_synced);
        }

        /// An image taken while the workload goes on is exactly what a
        /// crash at that moment leaves.
        #[test]
        fn image_equals_the_crash(
            steps in proptest::collection::vec(name_step(), 0..24),
            appends in proptest::collection::vec(file_step(), 0..24),
            tear in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let (dir, inner, fs) = setup();
            let name = |i: usize| dir.path().join(format!("n{i}"));
            let mut log = fs.create(&dir.path().join("log")).unwrap();
            for (i, step) in steps.into_iter().enumerate() {
                match step {
                    NameStep::Create(i, b) => {
                        let mut f = fs.create(&name(i)).unwrap();
                        f.append(&b).unwrap();
                    }
                    NameStep::Rename(a, b) if inner.exists(&name(a)) => {
                        fs.rename(&name(a), &name(b)).unwrap();
                    }
                    NameStep::Remove(i) if inner.exists(&name(i)) => fs.remove(&name(i)).unwrap(),
                    NameStep::SyncDir => fs.sync_dir(dir.path()).unwrap(),
                    _ => {}
                }
                match appends.get(i) {
                    Some(FileStep::Append(b)) => log.append(b).unwrap(),
                    Some(FileStep::Sync) => log.sync().unwrap(),
                    None => {}
                }
            }
            let images = tempfile::tempdir().unwrap();
            let dest = images.path().join("image");
            fs.image_to(dir.path(), &dest, tear, seed).unwrap();
            fs.crash(tear, seed).unwrap();
            let sorted = |d: &Path| {
                let mut s = snapshot(&inner, d);
                s.sort();
                s
            };
            prop_assert_eq!(sorted(&dest), sorted(dir.path()));
        }
    }
}
