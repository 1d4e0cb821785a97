//! A file system that can lose power: an in-memory FUSE file system that keeps, beside what
//! readers see, what a disk would still hold after a power cut, and can be cut and mounted
//! again on exactly that.
//!
//! The model is deliberately conservative (what ext4 and XFS promise, not what they usually
//! do):
//! - a file's bytes and length become durable only by `fsync`/`fdatasync` of that file (which
//!   the kernel precedes with a write-back of its dirty pages, so pages written through a
//!   `MAP_SHARED` map arrive here as `write` before the sync does); `msync(MS_SYNC)` is an fsync;
//! - a directory's entries (create, mkdir, rename, unlink) become durable only by an fsync of
//!   that directory; a new file whose directory was never synced after its creation is gone;
//! - a file that was named durably but never synced comes back empty.
//!
//! A cut can also let a random, seeded subset of the pages written since a file's last sync
//! survive (`Survival::RandomPages`), as a real disk that was writing back when the power went
//! does; directory entries stay as their last sync left them in both modes.
//!
//! The mount runs on a thread of the test process (`fuser::spawn_mount`). It has no
//! `direct_io`, so the kernel page cache serves reads and shared writable maps and writes them
//! back through `write` when something syncs (dirty pages nobody synced never reach this
//! instance; `unsynced_bytes` measures them through the mount). A cut freezes the old instance
//! (any later write or sync that still reaches it is ignored), detaches it lazily, and gives
//! the durable image, which `PowerCutFs::mount` mounts as a fresh instance, with its own
//! empty page cache. Use a new mount point for each instance: a detached instance's
//! session may still try to unmount its own path when it ends.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const PAGE: usize = 4096;
const ROOT: u64 = 1;
/// Nothing is cached by the kernel beyond one request: every lookup and stat comes here.
const TTL: Duration = Duration::ZERO;

/// What of the writes since a file's last sync a cut keeps.
#[derive(Debug, Clone, Copy)]
pub enum Survival {
    /// Nothing: the disk holds exactly what the syncs made durable.
    Nothing,
    /// Each 4 KiB page written since the file's last sync survives with probability 1/2 (drawn
    /// from the seed), and a length changed since then survives with probability 1/2.
    RandomPages { seed: u64 },
}

#[derive(Debug, Clone)]
enum Body {
    File {
        data: Vec<u8>,
        synced: Vec<u8>,
        /// Pages written (or uncovered by a length change) since the last sync.
        dirty: BTreeSet<usize>,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        synced: BTreeMap<OsString, u64>,
    },
}

#[derive(Debug, Clone)]
struct Node {
    body: Body,
    perm: u16,
    mtime: SystemTime,
}

impl Node {
    fn file(data: Vec<u8>) -> Self {
        Self {
            body: Body::File {
                synced: data.clone(),
                data,
                dirty: BTreeSet::new(),
            },
            perm: 0o644,
            mtime: SystemTime::now(),
        }
    }

    fn dir(entries: BTreeMap<OsString, u64>) -> Self {
        Self {
            body: Body::Dir {
                synced: entries.clone(),
                entries,
            },
            perm: 0o755,
            mtime: SystemTime::now(),
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, size, nlink) = match &self.body {
            Body::File { data, .. } => (FileType::RegularFile, data.len() as u64, 1),
            Body::Dir { .. } => (FileType::Directory, 0, 2),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: self.mtime,
            kind,
            perm: self.perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        }
    }
}

/// Counts of what the file system was asked to do, for the test's report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub writes: u64,
    pub written_bytes: u64,
    pub file_syncs: u64,
    pub dir_syncs: u64,
    pub fallocates: u64,
    pub renames: u64,
    pub unlinks: u64,
    /// Writes and syncs that reached the instance after it was cut, and were ignored.
    pub after_cut: u64,
}

/// What a cut threw away.
#[derive(Debug, Default, Clone, Copy)]
pub struct CutReport {
    /// Files whose bytes or length had changed since their last sync.
    pub files_rolled_back: usize,
    /// Directories whose entries had changed since their last sync.
    pub dirs_rolled_back: usize,
    /// Unsynced pages that survived (only with `Survival::RandomPages`).
    pub pages_kept: usize,
    /// Unsynced pages that were lost.
    pub pages_lost: usize,
}

#[derive(Debug, Clone)]
pub struct Disk {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    frozen: bool,
    pub counters: Counters,
}

impl Default for Disk {
    fn default() -> Self {
        Self::new()
    }
}

impl Disk {
    /// An empty disk: a root directory, durably empty.
    pub fn new() -> Self {
        Self {
            nodes: HashMap::from([(ROOT, Node::dir(BTreeMap::new()))]),
            next_ino: ROOT + 1,
            frozen: false,
            counters: Counters::default(),
        }
    }

    fn add(&mut self, node: Node) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&dir).map(|n| &mut n.body) {
            Some(Body::Dir { entries, .. }) => Ok(entries),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn child(&self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        match self.nodes.get(&dir).map(|n| &n.body) {
            Some(Body::Dir { entries, .. }) => entries.get(name).copied().ok_or(Errno::ENOENT),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        self.nodes
            .get(&ino)
            .map(|n| n.attr(ino))
            .ok_or(Errno::ENOENT)
    }

    fn file_mut(&mut self, ino: u64) -> Result<(&mut Vec<u8>, &mut BTreeSet<usize>), Errno> {
        match self.nodes.get_mut(&ino) {
            Some(node) => {
                node.mtime = SystemTime::now();
                match &mut node.body {
                    Body::File { data, dirty, .. } => Ok((data, dirty)),
                    Body::Dir { .. } => Err(Errno::EISDIR),
                }
            }
            None => Err(Errno::ENOENT),
        }
    }

    fn make(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<FileAttr, Errno> {
        if self.child(parent, name).is_ok() {
            return Err(Errno::EEXIST);
        }
        self.entries_mut(parent)?;
        let ino = self.add(node);
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.attr(ino)
    }

    fn write(&mut self, ino: u64, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
        let (data, dirty) = self.file_mut(ino)?;
        let end = offset + bytes.len();
        if data.len() < end {
            dirty.extend(data.len() / PAGE..end.div_ceil(PAGE));
            data.resize(end, 0);
        }
        data[offset..end].copy_from_slice(bytes);
        dirty.extend(offset / PAGE..end.div_ceil(PAGE));
        Ok(())
    }

    fn set_len(&mut self, ino: u64, len: usize) -> Result<(), Errno> {
        let (data, dirty) = self.file_mut(ino)?;
        let (from, to) = (data.len().min(len), data.len().max(len));
        dirty.extend(from / PAGE..to.div_ceil(PAGE));
        data.resize(len, 0);
        Ok(())
    }

    fn sync_file(&mut self, ino: u64) -> Result<(), Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::File {
                data,
                synced,
                dirty,
            }) => {
                synced.clone_from(data);
                dirty.clear();
                Ok(())
            }
            Some(Body::Dir { entries, synced }) => {
                synced.clone_from(entries);
                Ok(())
            }
            None => Err(Errno::ENOENT),
        }
    }

    /// Every path the live file system has, one a line with its length, marked `(not
    /// durable)` where its entry in its directory is not synced (a cut now would lose the
    /// name, and with it everything under it), for failure messages.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        let mut todo = vec![(ROOT, PathBuf::from("/"), true)];
        while let Some((ino, path, durable)) = todo.pop() {
            let Some(node) = self.nodes.get(&ino) else {
                continue;
            };
            let mark = if durable { "" } else { " (not durable)" };
            match &node.body {
                Body::Dir { entries, synced } => {
                    out.push_str(&format!("{}/{mark}\n", path.display()));
                    for (name, child) in entries.iter().rev() {
                        let named = synced.get(name) == Some(child);
                        todo.push((*child, path.join(name), named));
                    }
                }
                Body::File { data, synced, .. } => out.push_str(&format!(
                    "{} {} bytes, {} synced{mark}\n",
                    path.display(),
                    data.len(),
                    synced.len()
                )),
            }
        }
        out
    }

    /// What the disk holds after a power cut: every node reachable from the root through
    /// synced directory entries, each with its synced bytes (plus, with `RandomPages`, some of
    /// what was written since).
    pub fn durable_image(&self, survival: Survival) -> (Disk, CutReport) {
        let mut rng = match survival {
            Survival::Nothing => None,
            Survival::RandomPages { seed } => Some(seed | 1),
        };
        let mut coin = move || match rng.as_mut() {
            None => false,
            Some(x) => {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                *x & 1 == 1
            }
        };
        let mut report = CutReport::default();
        let mut image = Disk {
            nodes: HashMap::new(),
            next_ino: self.next_ino,
            frozen: false,
            counters: Counters::default(),
        };
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            if image.nodes.contains_key(&ino) {
                continue;
            }
            let Some(node) = self.nodes.get(&ino) else {
                continue;
            };
            let kept = match &node.body {
                Body::Dir { entries, synced } => {
                    report.dirs_rolled_back += usize::from(entries != synced);
                    todo.extend(synced.values().copied());
                    Node::dir(synced.clone())
                }
                Body::File {
                    data,
                    synced,
                    dirty,
                } => {
                    report.files_rolled_back += usize::from(data != synced);
                    let mut bytes = synced.clone();
                    if data.len() != synced.len() && coin() {
                        bytes.resize(data.len(), 0);
                    }
                    for &page in dirty {
                        let from = page * PAGE;
                        let to = (from + PAGE).min(bytes.len()).min(data.len());
                        if from >= to {
                            continue;
                        }
                        if coin() {
                            bytes[from..to].copy_from_slice(&data[from..to]);
                            report.pages_kept += 1;
                        } else {
                            report.pages_lost += 1;
                        }
                    }
                    Node::file(bytes)
                }
            };
            image.nodes.insert(
                ino,
                Node {
                    perm: node.perm,
                    mtime: node.mtime,
                    ..kept
                },
            );
        }
        (image, report)
    }
}

/// The FUSE side: every operation takes the one lock on the disk.
struct Fs {
    disk: Arc<Mutex<Disk>>,
}

impl Fs {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// fsync/fdatasync of a file, or fsync of a directory: makes it durable, unless the power
    /// is already cut (then it is only counted).
    fn sync(&self, ino: INodeNo, dir: bool, reply: ReplyEmpty) {
        let mut disk = self.disk();
        if disk.frozen {
            disk.counters.after_cut += 1;
            return reply.ok();
        }
        if dir {
            disk.counters.dir_syncs += 1;
        } else {
            disk.counters.file_syncs += 1;
        }
        done(reply, disk.sync_file(ino.0));
    }
}

fn done(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

impl fuser::Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let disk = self.disk();
        entry(reply, disk.child(parent.0, name).and_then(|i| disk.attr(i)));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.disk().attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut disk = self.disk();
        let mut result = Ok(());
        if let Some(size) = size {
            if disk.frozen {
                disk.counters.after_cut += 1;
            } else {
                result = disk.set_len(ino.0, size as usize);
            }
        }
        if let (Some(mode), Some(node)) = (mode, disk.nodes.get_mut(&ino.0)) {
            node.perm = (mode & 0o7777) as u16;
        }
        match result.and_then(|()| disk.attr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut node = Node::dir(BTreeMap::new());
        node.perm = (mode & !umask & 0o7777) as u16;
        let mut disk = self.disk();
        // A new directory is durably empty; only its parent's sync names it.
        entry(reply, disk.make(parent.0, name, node));
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut disk = self.disk();
        let result = match disk.child(parent.0, name) {
            Ok(_) if flags & libc::O_EXCL != 0 => Err(Errno::EEXIST),
            Ok(ino) => {
                if flags & libc::O_TRUNC != 0 {
                    disk.set_len(ino, 0).and_then(|()| disk.attr(ino))
                } else {
                    disk.attr(ino)
                }
            }
            Err(_) => {
                let mut node = Node::file(Vec::new());
                node.perm = (mode & !umask & 0o7777) as u16;
                disk.make(parent.0, name, node)
            }
        };
        match result {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.disk().attr(ino.0) {
            // This instance is the only writer, so what the page cache holds is current:
            // keeping it spares a write-back and invalidation of the maps on every open.
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let disk = self.disk();
        match disk.nodes.get(&ino.0).map(|n| &n.body) {
            Some(Body::File { data, .. }) => {
                let from = (offset as usize).min(data.len());
                let to = (from + size as usize).min(data.len());
                reply.data(&data[from..to]);
            }
            Some(Body::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut disk = self.disk();
        if disk.frozen {
            disk.counters.after_cut += 1;
            return reply.written(data.len() as u32);
        }
        disk.counters.writes += 1;
        disk.counters.written_bytes += data.len() as u64;
        match disk.write(ino.0, offset as usize, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino, false, reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let disk = self.disk();
        let entries = match disk.nodes.get(&ino.0).map(|n| &n.body) {
            Some(Body::Dir { entries, .. }) => entries,
            Some(_) => return reply.error(Errno::ENOTDIR),
            None => return reply.error(Errno::ENOENT),
        };
        let dots = [(ino.0, OsStr::new(".")), (ino.0, OsStr::new(".."))];
        let all = dots
            .into_iter()
            .chain(entries.iter().map(|(n, i)| (*i, n.as_os_str())));
        for (i, (child, name)) in all.enumerate().skip(offset as usize) {
            let kind = match disk.nodes.get(&child).map(|n| &n.body) {
                Some(Body::File { .. }) => FileType::RegularFile,
                _ => FileType::Directory,
            };
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino, true, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut disk = self.disk();
        disk.counters.unlinks += 1;
        let result = match disk.child(parent.0, name) {
            Ok(ino) if matches!(disk.nodes[&ino].body, Body::Dir { .. }) => Err(Errno::EISDIR),
            Ok(_) => disk.entries_mut(parent.0).map(|e| {
                e.remove(name);
            }),
            Err(e) => Err(e),
        };
        done(reply, result);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut disk = self.disk();
        let empty = disk
            .child(parent.0, name)
            .and_then(|ino| match &disk.nodes[&ino].body {
                Body::Dir { entries, .. } => Ok(entries.is_empty()),
                Body::File { .. } => Err(Errno::ENOTDIR),
            });
        let result = match empty {
            Ok(true) => disk.entries_mut(parent.0).map(|e| {
                e.remove(name);
            }),
            Ok(false) => Err(Errno::ENOTEMPTY),
            Err(e) => Err(e),
        };
        done(reply, result);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut disk = self.disk();
        disk.counters.renames += 1;
        let result = (|| {
            let ino = disk.child(parent.0, name)?;
            if flags.contains(RenameFlags::RENAME_EXCHANGE)
                || flags.contains(RenameFlags::RENAME_WHITEOUT)
            {
                return Err(Errno::EINVAL);
            }
            if let Ok(old) = disk.child(newparent.0, newname) {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                if let Body::Dir { entries, .. } = &disk.nodes[&old].body {
                    if !entries.is_empty() {
                        return Err(Errno::ENOTEMPTY);
                    }
                }
            }
            disk.entries_mut(newparent.0)?;
            disk.entries_mut(parent.0)?.remove(name);
            disk.entries_mut(newparent.0)?
                .insert(newname.to_owned(), ino);
            Ok(())
        })();
        done(reply, result);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut disk = self.disk();
        disk.counters.fallocates += 1;
        let end = (offset + length) as usize;
        let result = match mode {
            0 => match disk.file_mut(ino.0) {
                Ok((data, _)) if data.len() >= end => Ok(()),
                Ok(_) => disk.set_len(ino.0, end),
                Err(e) => Err(e),
            },
            libc::FALLOC_FL_KEEP_SIZE => Ok(()),
            _ => Err(Errno::EOPNOTSUPP),
        };
        done(reply, result);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // 4 GiB, nearly all free: enough that nothing the bus checks finds it full.
        reply.statfs(
            1 << 20,
            1 << 20,
            1 << 20,
            1 << 20,
            1 << 20,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// One mounted instance of a disk. Dropping it detaches the mount (lazily) without a cut.
pub struct PowerCutFs {
    disk: Arc<Mutex<Disk>>,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl PowerCutFs {
    /// Mounts `disk` on `mountpoint` (an existing empty directory). Through `fusermount3
    /// -o auto_unmount` where it can, so that even a test process killed outright leaves no
    /// mount behind; else directly (root) or plainly through fusermount3.
    pub fn mount(disk: Disk, mountpoint: &Path) -> std::io::Result<Self> {
        let disk = Arc::new(Mutex::new(disk));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("arqonbus-powercut".into()),
            fuser::MountOption::Subtype("powercut".into()),
            fuser::MountOption::RW,
            fuser::MountOption::AutoUnmount,
        ];
        // auto_unmount needs allow_root or allow_other; the tests run as root anyway.
        config.acl = fuser::SessionACL::RootAndOwner;
        let fs = || Fs {
            disk: Arc::clone(&disk),
        };
        let session = match fuser::spawn_mount(fs(), mountpoint, &config) {
            Ok(session) => session,
            Err(e) => {
                eprintln!(
                    "power_cut: mounting with auto_unmount failed ({e}); mounting without it \
                     (a test process killed outright would leave {} mounted)",
                    mountpoint.display()
                );
                config.mount_options.pop();
                config.acl = fuser::SessionACL::Owner;
                fuser::spawn_mount(fs(), mountpoint, &config)?
            }
        };
        Ok(Self {
            disk,
            mountpoint: mountpoint.to_owned(),
            session: Some(session),
        })
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// How many bytes of the files here a cut now would lose: each file as the kernel shows it
    /// (with the dirty pages of its page cache, which this instance has not even seen yet)
    /// against what its last sync made durable. Reads through the mount: call it after the
    /// writer is gone and before `cut`.
    pub fn unsynced_bytes(&self) -> usize {
        let files: Vec<(PathBuf, Vec<u8>)> = {
            let disk = self.disk.lock().unwrap_or_else(|e| e.into_inner());
            let mut files = Vec::new();
            let mut todo = vec![(ROOT, self.mountpoint.clone())];
            while let Some((ino, path)) = todo.pop() {
                match disk.nodes.get(&ino).map(|n| &n.body) {
                    Some(Body::Dir { entries, .. }) => {
                        todo.extend(entries.iter().map(|(n, i)| (*i, path.join(n))));
                    }
                    Some(Body::File { synced, .. }) => files.push((path, synced.clone())),
                    None => {}
                }
            }
            files
        };
        // The lock is released: these reads come back to this instance.
        files
            .into_iter()
            .map(|(path, synced)| {
                let live = std::fs::read(&path).unwrap_or_default();
                let common = live.len().min(synced.len());
                let differ = (0..common).filter(|&i| live[i] != synced[i]).count();
                differ + live.len().max(synced.len()) - common
            })
            .sum()
    }

    /// The live file system, marking what a cut now would lose (`Disk::listing`).
    pub fn listing(&self) -> String {
        self.disk
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .listing()
    }

    pub fn counters(&self) -> Counters {
        self.disk.lock().unwrap_or_else(|e| e.into_inner()).counters
    }

    /// Cuts the power: from now on this instance ignores every write and sync (the kernel
    /// drops the dirty pages of a detached FUSE mount), is detached, and what the disk
    /// holds can be taken from what it returns, to mount on a new mount point. Kill every
    /// process that has files open here first.
    pub fn cut(mut self) -> Frozen {
        self.disk.lock().unwrap_or_else(|e| e.into_inner()).frozen = true;
        self.detach();
        Frozen(Arc::clone(&self.disk))
    }

    fn detach(&mut self) {
        if let Some(session) = self.session.take() {
            let path = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes())
                .expect("a mount point without NUL");
            // SAFETY: umount2 with a valid C string; MNT_DETACH only unlinks the mount from the
            // tree, the instance ends when its last open file is gone.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            // The session notices the detached mount and does not unmount anything else.
            drop(session);
        }
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        self.detach();
    }
}

/// A cut instance, still answering the kernel until the detached mount goes away, and
/// ignoring any write or sync that still arrives.
pub struct Frozen(Arc<Mutex<Disk>>);

impl Frozen {
    /// What the disk holds after the cut (`Disk::durable_image`); the writes that arrived
    /// after the cut are not part of it.
    pub fn image(&self, survival: Survival) -> (Disk, CutReport) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .durable_image(survival)
    }

    /// Writes and syncs that arrived after the cut (and were ignored).
    pub fn ignored(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counters
            .after_cut
    }
}

/// True when this machine can mount FUSE file systems (`/dev/fuse` exists).
pub fn fuse_available() -> bool {
    Path::new("/dev/fuse").exists()
}
