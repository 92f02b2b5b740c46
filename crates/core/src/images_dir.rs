//! The images directory, opened once: every file a dump writes is created through the directory's
//! descriptor with O_CREAT|O_EXCL|O_NOFOLLOW, so neither a symlink planted in the directory nor a
//! directory swapped along its path later can send a write anywhere else.
//!
//! A directory that existed before must be ours and closed to others (owner = our euid, no group
//! or world write unless sticky): anyone else who can write there could rename our files or plant
//! names. Directories this run creates are 0700 and remembered, so a failed run removes exactly
//! what it created (`discard`) and nothing else.
//!
//! A directory that already holds a checkpoint is never written into: `stage_replacement` makes a
//! sibling directory for the new set, and `commit` swaps the two with renameat2(RENAME_EXCHANGE)
//! in one step, then deletes the old set's checkpoint files and moves anything else back. Until
//! that swap, a failure (or a crash) leaves the old set whole where it was.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::error::{Error, ErrorCode, Result};
use crate::sys::renameat2;

/// What a dump leaves in its directory, by name: CRIU's images (`*.img`, the stats files, the
/// irmap cache), the `parent` link of an incremental dump, and tsdump's tracking sidecar.
pub fn is_checkpoint_file(name: &str) -> bool {
    name.ends_with(".img") || matches!(name, "stats-dump" | "stats-restore" | "irmap-cache" | "parent" | "tsdump-track.json")
}

fn err(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ImageIo, what.to_string())
}

/// A file this run created, with its identity so that clean-up never removes a replacement.
struct Created {
    name: OsString,
    id: FileId,
}

/// Device, inode and birth time: inode numbers are reused, a birth time to the nanosecond along
/// with them is not (where the filesystem has no birth time, device and inode alone).
type FileId = (u64, u64, i64, u32);

/// The FileId of `name` in `dir` (not following a link), or of `dir` itself when `name` is empty.
fn file_id(dir: &OwnedFd, name: &OsStr) -> std::result::Result<FileId, Errno> {
    let c = std::ffi::CString::new(name.as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    let flags = libc::AT_SYMLINK_NOFOLLOW | if name.is_empty() { libc::AT_EMPTY_PATH } else { 0 };
    // SAFETY: struct statx is plain integers: all-zero is a valid value.
    let mut x: libc::statx = unsafe { std::mem::zeroed() };
    let r = crate::sys::statx(dir.as_raw_fd(), &c, flags, libc::STATX_INO | libc::STATX_BTIME, &mut x);
    Errno::result(r)?;
    let dev = libc::makedev(x.stx_dev_major, x.stx_dev_minor);
    let born = if x.stx_mask & libc::STATX_BTIME != 0 { (x.stx_btime.tv_sec, x.stx_btime.tv_nsec) } else { (0, 0) };
    Ok((dev, x.stx_ino, born.0, born.1))
}

/// The sibling directory a replacement set is written to before the swap.
struct Staging {
    name: OsString,
    fd: OwnedFd,
}

/// A directory this run made: its parent's descriptor, its name there, and its path.
struct Made {
    parent: OwnedFd,
    name: OsString,
    path: PathBuf,
}

struct State {
    /// The directory itself (after a committed replacement, the new set's).
    dir: OwnedFd,
    staging: Option<Staging>,
    created: Vec<Created>,
    /// Outermost first.
    made: Vec<Made>,
    committed: bool,
}

impl State {
    /// Where files are created now.
    fn target(&self) -> &OwnedFd {
        self.staging.as_ref().map_or(&self.dir, |s| &s.fd)
    }
}

pub struct ImagesDir {
    path: PathBuf,
    /// The directory that holds `path` (where the staging sibling goes).
    parent: OwnedFd,
    name: OsString,
    state: Mutex<State>,
}

/// How `open` takes the directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Create it (and missing parents, 0700) when missing; else a missing directory fails.
    pub create: bool,
    /// It may belong to others (a log file's directory, e.g. /var/log or /tmp): files are only
    /// ever created in it, so `check_closed` is skipped. Never for images.
    pub shared: bool,
}

impl OpenOptions {
    pub const CREATE: OpenOptions = OpenOptions { create: true, shared: false };
    pub const EXISTING: OpenOptions = OpenOptions { create: false, shared: false };
}

/// Outcome of `commit`.
#[derive(Debug, Default)]
pub struct Commit {
    /// Checkpoint files of the replaced set that were deleted.
    pub replaced: usize,
    /// A replaced set's leftovers that could be neither moved back nor deleted: where they are.
    pub left_over: Option<PathBuf>,
}

fn checked_name(name: &str) -> Result<&OsStr> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(err(format_args!("{name:?} is not a file name inside the images directory")));
    }
    Ok(OsStr::new(name))
}

fn lstat_at(dir: &OwnedFd, name: &OsStr) -> std::result::Result<FileStat, Errno> {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// The mount a descriptor is on (/proc/self/fdinfo's mnt_id).
fn mount_id(fd: &OwnedFd) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    text.lines().find_map(|l| l.strip_prefix("mnt_id:")).and_then(|v| v.trim().parse().ok())
}

fn open_dir_at(at: &OwnedFd, name: &OsStr, follow: bool) -> std::result::Result<OwnedFd, Errno> {
    let mut flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    openat(at, name, flags, Mode::empty())
}

/// Names in the directory behind `fd`.
fn list(fd: &OwnedFd, what: &Path) -> Result<Vec<OsString>> {
    // /proc/self/fd/N is the very directory the descriptor holds, whatever its path became.
    let rd = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| err(format_args!("listing {}: {e}", what.display())))?;
    rd.map(|e| e.map(|e| e.file_name()).map_err(|e| err(format_args!("listing {}: {e}", what.display())))).collect()
}

/// Refuses a directory someone else could write into behind our back.
fn check_closed(st: &FileStat, path: &Path) -> Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    if st.st_uid != me {
        return Err(err(format_args!(
            "images dir {} belongs to uid {}, not to us (uid {me}): its owner could swap our files for links; use a directory of our own, or a new path for tsdump to create",
            path.display(),
            st.st_uid
        )));
    }
    let mode = st.st_mode;
    if mode & 0o022 != 0 && mode & libc::S_ISVTX == 0 {
        return Err(err(format_args!(
            "images dir {} is writable by {} (mode {:o}): others could plant or swap files in it; chmod go-w it, or use a new path",
            path.display(),
            if mode & 0o002 != 0 { "everyone" } else { "its group" },
            mode & 0o7777
        )));
    }
    Ok(())
}

impl ImagesDir {
    /// Opens `path` (relative paths are taken from the current directory), creating it and
    /// missing parents 0700 when asked. An existing directory must pass `check_closed` unless
    /// `shared`.
    pub fn open(path: &Path, opts: OpenOptions) -> Result<ImagesDir> {
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().map_err(|e| err(format_args!("images dir {}: current directory: {e}", path.display())))?.join(path)
        };
        let mut parts: Vec<OsString> = Vec::new();
        for c in abs.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir => parts.push(OsString::from("..")),
                Component::Normal(s) => parts.push(s.to_owned()),
                Component::Prefix(_) => return Err(err(format_args!("images dir {}: not a Linux path", path.display()))),
            }
        }
        let Some(name) = parts.pop().filter(|n| n != "..") else {
            return Err(err(format_args!("images dir {}: name a directory below /", abs.display())));
        };
        let mut made: Vec<Made> = Vec::new();
        match Self::walk(&abs, parts, &name, opts, &mut made) {
            Ok((parent, dir)) => Ok(ImagesDir { path: abs, parent, name, state: Mutex::new(State { dir, staging: None, created: Vec::new(), made, committed: false }) }),
            Err(e) => {
                remove_made(&mut made);
                Err(e)
            }
        }
    }

    /// Opens (or makes) each directory down to `name`; returns its parent and itself.
    fn walk(abs: &Path, parts: Vec<OsString>, name: &OsStr, opts: OpenOptions, made: &mut Vec<Made>) -> Result<(OwnedFd, OwnedFd)> {
        let mut cur = nix::fcntl::open("/", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| err(format_args!("opening /: {}", e)))?;
        // The parents are the user's path: symlinks there are followed as the user wrote them.
        let mut walked = PathBuf::from("/");
        for part in parts {
            walked.push(&part);
            cur = match open_dir_at(&cur, &part, true) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if opts.create => make_dir(&cur, &part, &walked, made)?,
                Err(e) => return Err(err(format_args!("images dir {}: {}: {}", abs.display(), walked.display(), e))),
            };
        }
        let dir = match open_dir_at(&cur, name, false) {
            Ok(fd) => {
                if !opts.shared {
                    let st = fstat(&fd).map_err(|e| err(format_args!("images dir {}: fstat: {}", abs.display(), e)))?;
                    check_closed(&st, abs)?;
                }
                // a read-only mount or a directory we may not write: say so before any work
                nix::unistd::faccessat(&fd, ".", nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK, AtFlags::AT_EACCESS)
                    .map_err(|e| err(format_args!("images dir {}: cannot write into it: {e}", abs.display())))?;
                fd
            }
            Err(Errno::ENOENT) if opts.create => make_dir(&cur, name, abs, made)?,
            Err(e) => {
                let link = lstat_at(&cur, name).is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFLNK);
                let why = match e {
                    _ if link => "is a symbolic link; tsdump writes only into a real directory".to_string(),
                    Errno::ENOTDIR => "is not a directory (ENOTDIR)".to_string(),
                    Errno::ENOENT => "does not exist".to_string(),
                    e => e.to_string(),
                };
                return Err(err(format_args!("images dir {}: {why}", abs.display())));
            }
        };
        Ok((cur, dir))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory as named (absolute).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where new files go now: the path, or the staging sibling until `commit`.
    pub fn work_path(&self) -> PathBuf {
        self.work_path_of(&self.state())
    }

    fn work_path_of(&self, st: &State) -> PathBuf {
        match &st.staging {
            Some(s) => self.path.with_file_name(&s.name),
            None => self.path.clone(),
        }
    }

    /// The directories this run created, outermost first (empty if the directory existed).
    pub fn made_dirs(&self) -> Vec<PathBuf> {
        self.state().made.iter().map(|m| m.path.clone()).collect()
    }

    /// The checkpoint files (see `is_checkpoint_file`) the directory holds now, sorted.
    pub fn checkpoint_files(&self) -> Result<Vec<String>> {
        let st = self.state();
        let mut out: Vec<String> =
            list(&st.dir, &self.path)?.into_iter().filter_map(|n| n.into_string().ok()).filter(|n| is_checkpoint_file(n)).collect();
        out.sort();
        Ok(out)
    }

    /// Sends the files that follow to a fresh sibling directory, swapped in by `commit`.
    pub fn stage_replacement(&self) -> Result<()> {
        let mut st = self.state();
        if st.staging.is_some() {
            return Ok(());
        }
        let shown = self.path.display();
        if mount_id(&st.dir) != mount_id(&self.parent) {
            return Err(err(format_args!(
                "images dir {shown} is a mount point: a replacement cannot be swapped in atomically there; dump into a directory inside it, or an empty one"
            )));
        }
        let base = format!(".{}.tsdump-{}", self.name.to_string_lossy(), std::process::id());
        let mut n = 0;
        let name = loop {
            let name = OsString::from(format!("{base}-{n}"));
            match mkdirat(&self.parent, name.as_os_str(), Mode::from_bits_truncate(0o700)) {
                Ok(()) => break name,
                Err(Errno::EEXIST) if n < 100 => n += 1,
                Err(e) => return Err(err(format_args!("creating a directory beside {shown} for the replacement: {}", e))),
            }
        };
        // Check now that this filesystem swaps directories, rather than fail at the commit.
        let probe = OsString::from(format!("{}.probe", name.to_string_lossy()));
        let probed = mkdirat(&self.parent, probe.as_os_str(), Mode::from_bits_truncate(0o700))
            .and_then(|()| renameat2(&self.parent, name.as_os_str(), &self.parent, probe.as_os_str(), libc::RENAME_EXCHANGE));
        let _ = unlinkat(&self.parent, probe.as_os_str(), UnlinkatFlags::RemoveDir);
        if let Err(e) = probed {
            let _ = unlinkat(&self.parent, name.as_os_str(), UnlinkatFlags::RemoveDir);
            return Err(err(format_args!(
                "images dir {shown}: its filesystem cannot swap directories (renameat2 RENAME_EXCHANGE: {}); dump into an empty directory",
                e
            )));
        }
        let fd = match open_dir_at(&self.parent, &name, false) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = unlinkat(&self.parent, name.as_os_str(), UnlinkatFlags::RemoveDir);
                return Err(err(format_args!("opening {}: {}", self.path.with_file_name(&name).display(), e)));
            }
        };
        st.staging = Some(Staging { name, fd });
        Ok(())
    }

    /// Creates `name` (owner-only, must not exist, never through a symlink) for writing.
    pub fn create(&self, name: &str) -> Result<File> {
        let n = checked_name(name)?;
        let mut st = self.state();
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(st.target(), n, flags, Mode::from_bits_truncate(0o600)).map_err(|e| {
            let why = if e == Errno::EEXIST { " (tsdump never writes over a file)" } else { "" };
            err(format_args!("cannot create {}: {e}{why}", self.shown(&st, name)))
        })?;
        let id = file_id(&fd, OsStr::new("")).map_err(|e| err(format_args!("statx {}: {}", self.shown(&st, name), e)))?;
        st.created.push(Created { name: n.to_owned(), id });
        Ok(File::from(fd))
    }

    /// A file with no name in the directory (O_TMPFILE, owner-only), for data a dump holds on
    /// to for a while: it never shows among the images and goes away with its descriptor, even
    /// when tsdump is killed. Where the filesystem has no O_TMPFILE, a name made for it is
    /// unlinked at once.
    pub fn scratch_file(&self, what: &str) -> Result<File> {
        let st = self.state();
        let mode = Mode::from_bits_truncate(0o600);
        let unnamed = openat(st.target(), ".", OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC, mode);
        let fd = match unnamed {
            Err(Errno::EOPNOTSUPP | Errno::EISDIR) => {
                let name = format!(".tsdump-{what}-{}", std::process::id());
                let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let fd = openat(st.target(), name.as_str(), flags, mode);
                if fd.is_ok() {
                    let _ = unlinkat(st.target(), name.as_str(), UnlinkatFlags::NoRemoveDir);
                }
                fd
            }
            other => other,
        };
        fd.map(File::from).map_err(|e| err(format_args!("cannot create a scratch file for {what} in {}: {e}", self.work_path_of(&st).display())))
    }

    /// Creates `name` as `create` does and writes all of `data` to it: a small file in one call.
    pub fn write_new(&self, name: &str, data: &[u8]) -> Result<()> {
        use std::io::Write;
        let mut file = self.create(name)?;
        file.write_all(data).map_err(|e| err(format_args!("cannot write {}: {e}", self.work_path().join(name).display())))
    }

    /// Like `create`, but an existing `name` (a file or a link, never a directory) is unlinked
    /// first, as the log of an earlier run is; a link's target is never touched.
    pub fn create_replacing(&self, name: &str) -> Result<File> {
        let n = checked_name(name)?;
        {
            let st = self.state();
            match unlinkat(st.target(), n, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(err(format_args!("cannot replace {}: {}", self.shown(&st, name), e))),
            }
        }
        self.create(name)
    }

    /// A symbolic link `name` → `target` (the `parent` link of an incremental dump); with
    /// `replace`, an existing link of that name is replaced (anything else stays and fails).
    pub fn symlink(&self, target: &str, name: &str, replace: bool) -> Result<()> {
        let n = checked_name(name)?;
        let mut st = self.state();
        if replace && lstat_at(st.target(), n).is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFLNK) {
            let _ = unlinkat(st.target(), n, UnlinkatFlags::NoRemoveDir);
        }
        nix::unistd::symlinkat(target, st.target(), n).map_err(|e| err(format_args!("creating link {} -> {target}: {}", self.shown(&st, name), e)))?;
        if let Ok(id) = file_id(st.target(), n) {
            st.created.push(Created { name: n.to_owned(), id });
        }
        Ok(())
    }

    /// Renames `from` to `to` inside the directory (a finished `.part` file to its real name); an
    /// existing `to` is replaced, a link there is replaced as a link, never written through.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (checked_name(from)?, checked_name(to)?);
        let mut st = self.state();
        nix::fcntl::renameat(st.target(), f, st.target(), t).map_err(|e| err(format_args!("renaming {} into place: {}", self.shown(&st, from), e)))?;
        st.created.retain(|c| c.name != t);
        if let Some(c) = st.created.iter_mut().find(|c| c.name == f) {
            c.name = t.to_owned();
        }
        Ok(())
    }

    /// Removes a file this run created (e.g. a half-written pages image after an error).
    pub fn remove(&self, name: &str) {
        let mut st = self.state();
        if let Some(i) = st.created.iter().position(|c| c.name == OsStr::new(name)) {
            let c = st.created.remove(i);
            remove_created(st.target(), &c);
        }
    }

    /// The names this run created so far, in order.
    pub fn created(&self) -> Vec<String> {
        self.state().created.iter().map(|c| c.name.to_string_lossy().into_owned()).collect()
    }

    fn shown(&self, st: &State, name: &str) -> String {
        self.work_path_of(st).join(name).display().to_string()
    }

    /// The commit point: the new set becomes the directory's content (swapped in when it was
    /// staged; then the replaced set's checkpoint files are deleted and anything else in it is
    /// moved back). After this, `discard` removes nothing.
    pub fn commit(&self) -> Result<Commit> {
        let mut st = self.state();
        let mut out = Commit::default();
        if st.committed {
            return Ok(out);
        }
        let Some(stage) = st.staging.take() else {
            let _ = nix::unistd::fsync(st.dir.as_fd());
            st.committed = true;
            return Ok(out);
        };
        if let Err(e) = renameat2(&self.parent, stage.name.as_os_str(), &self.parent, self.name.as_os_str(), libc::RENAME_EXCHANGE) {
            let shown = self.path.display();
            st.staging = Some(stage);
            return Err(err(format_args!("swapping the new images into {shown}: {} (the old images are untouched)", e)));
        }
        st.committed = true;
        // The descriptors follow the directories: the old set now sits under the staging name.
        let old = std::mem::replace(&mut st.dir, stage.fd);
        let old_path = self.path.with_file_name(&stage.name);
        let mut kept = false;
        for name in list(&old, &old_path).unwrap_or_default() {
            let checkpoint = name.to_str().is_some_and(is_checkpoint_file);
            let gone = if checkpoint {
                unlinkat(&old, name.as_os_str(), UnlinkatFlags::NoRemoveDir).is_ok()
            } else {
                renameat2(&old, name.as_os_str(), &st.dir, name.as_os_str(), libc::RENAME_NOREPLACE).is_ok()
            };
            out.replaced += usize::from(checkpoint && gone);
            kept |= !gone;
        }
        if kept || unlinkat(&self.parent, stage.name.as_os_str(), UnlinkatFlags::RemoveDir).is_err() {
            out.left_over = Some(old_path);
        }
        let _ = nix::unistd::fsync(self.parent.as_fd());
        Ok(out)
    }

    /// After a failure: removes the files this run created and the directories it made (while
    /// they are empty). Nothing after `commit`. Returns what it could not remove.
    pub fn discard(&self) -> Vec<String> {
        let mut st = self.state();
        let mut left = Vec::new();
        if st.committed {
            return left;
        }
        for c in std::mem::take(&mut st.created) {
            if !remove_created(st.target(), &c) {
                left.push(self.shown(&st, &c.name.to_string_lossy()));
            }
        }
        if let Some(stage) = st.staging.take() {
            if let Err(e) = unlinkat(&self.parent, stage.name.as_os_str(), UnlinkatFlags::RemoveDir) {
                left.push(format!("{} ({})", self.path.with_file_name(&stage.name).display(), e));
            }
        }
        if let Some(m) = remove_made(&mut st.made) {
            left.push(m);
        }
        left
    }
}

/// Unlinks a created file if its name still holds it; true if it is gone.
fn remove_created(dir: &OwnedFd, c: &Created) -> bool {
    match file_id(dir, &c.name) {
        Ok(id) if id == c.id => unlinkat(dir, c.name.as_os_str(), UnlinkatFlags::NoRemoveDir).is_ok(),
        Ok(_) => false,
        Err(_) => true,
    }
}

/// Removes made directories, innermost first, stopping at one that is not empty (a log kept
/// there keeps it and its parents). Returns the one that stayed.
fn remove_made(made: &mut Vec<Made>) -> Option<String> {
    while let Some(m) = made.pop() {
        if let Err(e) = unlinkat(&m.parent, m.name.as_os_str(), UnlinkatFlags::RemoveDir) {
            made.clear();
            return Some(format!("{} ({})", m.path.display(), e));
        }
    }
    None
}

fn make_dir(at: &OwnedFd, name: &OsStr, path: &Path, made: &mut Vec<Made>) -> Result<OwnedFd> {
    mkdirat(at, name, Mode::from_bits_truncate(0o700)).map_err(|e| err(format_args!("creating {}: {}", path.display(), e)))?;
    let parent = at.try_clone().map_err(|e| err(format_args!("dup: {e}")))?;
    made.push(Made { parent, name: name.to_owned(), path: path.to_owned() });
    open_dir_at(at, name, false).map_err(|e| err(format_args!("opening {} after creating it: {}", path.display(), e)))
}

/// A file to be created in an images directory (a pages image written from Rust).
#[derive(Clone)]
pub struct NewFile {
    pub dir: Arc<ImagesDir>,
    pub name: String,
}

impl NewFile {
    pub fn new(dir: &Arc<ImagesDir>, name: impl Into<String>) -> NewFile {
        NewFile { dir: dir.clone(), name: name.into() }
    }

    pub fn create(&self) -> Result<File> {
        self.dir.create(&self.name)
    }

    /// After a failure: a half-written image must not pass for a dump.
    pub fn remove(&self) {
        self.dir.remove(&self.name)
    }

    pub fn display(&self) -> String {
        self.dir.work_path().join(&self.name).display().to_string()
    }
}

impl std::fmt::Debug for ImagesDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImagesDir").field("path", &self.path).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn scratch(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("tsdump-imgdir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        p
    }

    #[test]
    fn a_planted_symlink_is_never_followed() {
        let base = scratch("link");
        let victim = base.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let d = ImagesDir::open(&base.join("d"), OpenOptions::CREATE).unwrap();
        std::os::unix::fs::symlink(&victim, base.join("d/pages-1.img")).unwrap();
        let e = d.create("pages-1.img").unwrap_err();
        assert_eq!(e.code, ErrorCode::ImageIo);
        assert!(d.create_replacing("pages-1.img").is_ok(), "the link itself is replaced");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(d.create("../escape.img").is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_directory_itself_must_not_be_a_link_nor_open_to_others() {
        let base = scratch("perm");
        std::fs::create_dir(base.join("real")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        assert!(ImagesDir::open(&base.join("link"), OpenOptions::CREATE).unwrap_err().message.contains("symbolic link"));
        std::fs::set_permissions(base.join("real"), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(ImagesDir::open(&base.join("real"), OpenOptions::EXISTING).unwrap_err().message.contains("writable by everyone"));
        std::fs::set_permissions(base.join("real"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        ImagesDir::open(&base.join("real"), OpenOptions::EXISTING).expect("sticky and ours");
        std::fs::set_permissions(base.join("real"), std::fs::Permissions::from_mode(0o700)).unwrap();
        nix::unistd::chown(&base.join("real"), Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        assert!(ImagesDir::open(&base.join("real"), OpenOptions::EXISTING).unwrap_err().message.contains("belongs to uid 65534"));
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn discard_removes_what_this_run_made_and_nothing_else() {
        let base = scratch("discard");
        let d = ImagesDir::open(&base.join("a/b"), OpenOptions::CREATE).unwrap();
        assert_eq!(d.made_dirs(), vec![base.join("a"), base.join("a/b")]);
        d.create("core-1.img").unwrap().write_all(b"x").unwrap();
        d.symlink("../x", "parent", false).unwrap();
        assert_eq!(d.discard(), Vec::<String>::new());
        assert!(!base.join("a").exists());

        std::fs::create_dir(base.join("c")).unwrap();
        std::fs::write(base.join("c/mine.txt"), b"keep").unwrap();
        let d = ImagesDir::open(&base.join("c"), OpenOptions::EXISTING).unwrap();
        d.create("files.img").unwrap();
        // a file replaced under the same name since is not ours any more
        d.create("core-2.img").unwrap();
        std::fs::write(base.join("c/other"), b"other").unwrap();
        std::fs::rename(base.join("c/other"), base.join("c/core-2.img")).unwrap();
        assert_eq!(d.discard(), vec![base.join("c/core-2.img").display().to_string()]);
        assert!(base.join("c/mine.txt").exists() && base.join("c").exists() && !base.join("c/files.img").exists());
        assert!(ImagesDir::open(&base.join("none"), OpenOptions::EXISTING).unwrap_err().message.contains("does not exist"));
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_replacement_is_swapped_in_at_the_commit_and_not_before() {
        let base = scratch("replace");
        let dir = base.join("ckpt");
        std::fs::create_dir(&dir).unwrap();
        for (n, b) in [("inventory.img", "old"), ("pages-9.img", "old"), ("dump.log", "log")] {
            std::fs::write(dir.join(n), b).unwrap();
        }
        let d = ImagesDir::open(&dir, OpenOptions::EXISTING).unwrap();
        assert_eq!(d.checkpoint_files().unwrap(), vec!["inventory.img", "pages-9.img"]);
        d.stage_replacement().unwrap();
        d.create("inventory.img").unwrap().write_all(b"new").unwrap();
        assert_eq!(std::fs::read(dir.join("inventory.img")).unwrap(), b"old", "nothing changes before the commit");
        // a failure: the old set is whole, the staging directory gone
        assert!(d.discard().is_empty());
        assert_eq!(std::fs::read_dir(&base).unwrap().count(), 1);

        let d = ImagesDir::open(&dir, OpenOptions::EXISTING).unwrap();
        d.stage_replacement().unwrap();
        d.create("inventory.img").unwrap().write_all(b"new").unwrap();
        let c = d.commit().unwrap();
        assert_eq!((c.replaced, c.left_over), (2, None));
        assert_eq!(std::fs::read(dir.join("inventory.img")).unwrap(), b"new");
        assert_eq!(std::fs::read(dir.join("dump.log")).unwrap(), b"log", "what is not a checkpoint file moves back");
        assert!(!dir.join("pages-9.img").exists());
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(std::fs::read_dir(&base).unwrap().count(), 1);
        assert!(d.discard().is_empty() && dir.join("inventory.img").exists(), "nothing is discarded after the commit");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
