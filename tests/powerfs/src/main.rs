//! powerfs: a FUSE filesystem that remembers only what a power loss would leave, for
//! airdock's power-loss test (`tests/it/powerloss.rs`).
//!
//! ```text
//! powerfs <state-dir> <mountpoint> [<dir-fsync-delay-ms>]
//! ```
//!
//! The mount starts empty. File bytes pass through to `<state-dir>/live/<inode>`; the
//! directory tree lives in memory. Beside the live state it keeps the *durable* state, under
//! the model POSIX promises and careful databases assume:
//! - a file's bytes are durable as of its last `fsync`/`fdatasync` (copied to
//!   `<state-dir>/durable/<inode>`); a file never synced is durable as an empty file;
//! - a directory's entries (create, mkdir, rename, unlink, rmdir) are durable as of the last
//!   `fsync` of that directory; a directory never synced has no durable entries.
//!
//! Commands, one per line on stdin (answers on stdout):
//! - `cut <dir>`: the power fails now. Every later operation fails with EIO (so nothing
//!   done after the cut can be acknowledged), and the durable-only tree is written to
//!   `<dir>` (created). Answers `cut <files> <dirs>`.
//! - `arm <n> <dir>`: the power fails during the `n`-th directory fsync from now, after
//!   its delay (below) and before it takes effect; then as `cut <dir>`.
//! - `exit`, or the end of stdin: unmount and exit.
//!
//! `ready` is printed once the filesystem is mounted.
//!
//! A directory fsync can be made slow (it sleeps before it takes effect; several requests
//! are served at once). A real fsync takes milliseconds, and while it runs the entry is
//! visible but not durable: the delay widens that window, so a writer that finds an entry
//! and acknowledges without making it durable is caught in it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// How long the kernel may cache names and attributes. Every change goes through this
/// filesystem, so the kernel's cache is never stale; a short TTL just bounds its memory.
const TTL: Duration = Duration::from_secs(1);

const ROOT: u64 = 1;

enum Kind {
    Dir(BTreeMap<OsString, u64>),
    File,
}

struct Node {
    kind: Kind,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    atime: SystemTime,
    ctime: SystemTime,
}

/// Everything, behind one mutex: each operation and the cut are atomic with respect to
/// each other, so an operation either happened wholly before the power failed or failed.
struct Model {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// Open backing files of the live state, by inode.
    files: HashMap<u64, File>,
    /// Directory entries as of each directory's last fsync.
    durable_dirs: HashMap<u64, BTreeMap<OsString, u64>>,
    /// Files with a durable copy in `durable/`.
    synced: HashSet<u64>,
    live: PathBuf,
    durable: PathBuf,
    cut: bool,
    /// Directory fsyncs to go before the armed cut, and where it writes the durable tree.
    armed: Option<(u64, PathBuf)>,
}

type Op<T> = Result<T, Errno>;

fn eio(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(5))
}

impl Model {
    fn node(&self, ino: u64) -> Op<&Node> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn entries(&self, dir: u64) -> Op<&BTreeMap<OsString, u64>> {
        match &self.node(dir)?.kind {
            Kind::Dir(e) => Ok(e),
            Kind::File => Err(Errno::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Op<&mut BTreeMap<OsString, u64>> {
        match self.nodes.get_mut(&dir).map(|n| &mut n.kind) {
            Some(Kind::Dir(e)) => Ok(e),
            Some(Kind::File) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file(&mut self, ino: u64) -> Op<&File> {
        if !self.files.contains_key(&ino) {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.live.join(ino.to_string()))
                .map_err(eio)?;
            self.files.insert(ino, f);
        }
        self.files.get(&ino).ok_or(Errno::EIO)
    }

    fn attr(&mut self, ino: u64) -> Op<FileAttr> {
        let (kind, size) = match self.node(ino)?.kind {
            Kind::Dir(_) => (FileType::Directory, 0),
            Kind::File => {
                let size = self.file(ino)?.metadata().map_err(eio)?.len();
                (FileType::RegularFile, size)
            }
        };
        let n = self.node(ino)?;
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.atime,
            mtime: n.mtime,
            ctime: n.ctime,
            crtime: n.ctime,
            kind,
            perm: n.perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: n.uid,
            gid: n.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn add(&mut self, req: &Request, parent: u64, name: &OsStr, mode: u32, dir: bool) -> Op<u64> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let kind = if dir {
            Kind::Dir(BTreeMap::new())
        } else {
            File::create(self.live.join(ino.to_string())).map_err(eio)?;
            Kind::File
        };
        let now = SystemTime::now();
        self.nodes.insert(
            ino,
            Node {
                kind,
                perm: (mode & 0o7777) as u16,
                uid: req.uid(),
                gid: req.gid(),
                mtime: now,
                atime: now,
                ctime: now,
            },
        );
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.touch(parent);
        Ok(ino)
    }

    fn touch(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.mtime = SystemTime::now();
            n.ctime = n.mtime;
        }
    }

    /// Whether `ino` may be removed (or replaced) by an operation on a directory (`dir`) or
    /// on a file: rmdir/unlink's and rename's errors.
    fn removable(&self, ino: u64, dir: bool) -> Op<()> {
        match (&self.node(ino)?.kind, dir) {
            (Kind::Dir(e), true) if !e.is_empty() => Err(Errno::ENOTEMPTY),
            (Kind::Dir(_), false) => Err(Errno::EISDIR),
            (Kind::File, true) => Err(Errno::ENOTDIR),
            _ => Ok(()),
        }
    }

    fn remove(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Op<()> {
        let ino = *self.entries(parent)?.get(name).ok_or(Errno::ENOENT)?;
        self.removable(ino, want_dir)?;
        self.entries_mut(parent)?.remove(name);
        self.touch(parent);
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Op<()> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return Err(Errno::EINVAL);
        }
        let ino = *self.entries(parent)?.get(name).ok_or(Errno::ENOENT)?;
        let src_dir = matches!(self.node(ino)?.kind, Kind::Dir(_));
        if let Some(&old) = self.entries(newparent)?.get(newname) {
            if old == ino {
                return Ok(());
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            self.removable(old, src_dir)?;
        }
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(newparent)?.insert(newname.to_owned(), ino);
        self.touch(parent);
        self.touch(newparent);
        Ok(())
    }

    /// `fsync`/`fdatasync` of a file, or `fsync` of a directory: what it names is durable.
    fn sync(&mut self, ino: u64) -> Op<()> {
        match &self.node(ino)?.kind {
            Kind::Dir(e) => {
                let e = e.clone();
                self.durable_dirs.insert(ino, e);
            }
            Kind::File => {
                self.file(ino)?.sync_data().map_err(eio)?;
                let name = ino.to_string();
                fs::copy(self.live.join(&name), self.durable.join(&name)).map_err(eio)?;
                self.synced.insert(ino);
            }
        }
        Ok(())
    }

    /// The power fails: nothing more happens, and the durable tree is written to `out`.
    /// Returns the answer line.
    fn power_cut(&mut self, out: &Path) -> io::Result<String> {
        self.cut = true;
        fs::create_dir_all(out)?;
        let (files, dirs) = self.materialise(ROOT, out)?;
        Ok(format!("cut {files} {dirs}"))
    }

    /// Write the durable-only tree below directory `dir` into `out`; returns (files, dirs).
    fn materialise(&self, dir: u64, out: &Path) -> io::Result<(usize, usize)> {
        let (mut files, mut dirs) = (0, 0);
        let Some(entries) = self.durable_dirs.get(&dir) else {
            return Ok((0, 0));
        };
        for (name, ino) in entries {
            let path = out.join(name);
            match self.nodes.get(ino).map(|n| &n.kind) {
                Some(Kind::Dir(_)) => {
                    fs::create_dir(&path)?;
                    let (f, d) = self.materialise(*ino, &path)?;
                    files += f;
                    dirs += d + 1;
                }
                Some(Kind::File) if self.synced.contains(ino) => {
                    fs::copy(self.durable.join(ino.to_string()), &path)?;
                    files += 1;
                }
                Some(Kind::File) => {
                    File::create(&path)?;
                    files += 1;
                }
                None => {}
            }
        }
        Ok((files, dirs))
    }
}

struct PowerFs {
    model: Arc<Mutex<Model>>,
    dir_sync_delay: Duration,
}

impl PowerFs {
    /// The model, or EIO once the power is cut.
    fn live(&self) -> Op<MutexGuard<'_, Model>> {
        let m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        if m.cut {
            return Err(Errno::EIO);
        }
        Ok(m)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Model) -> Op<T>) -> Op<T> {
        f(&mut *self.live()?)
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

fn empty(reply: ReplyEmpty, r: Op<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn entry(reply: ReplyEntry, r: Op<FileAttr>) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for PowerFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(
            reply,
            self.with(|m| {
                let ino = *m.entries(parent.0)?.get(name).ok_or(Errno::ENOENT)?;
                m.attr(ino)
            }),
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with(|m| m.attr(ino.0)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.with(|m| {
            if let Some(size) = size {
                m.file(ino.0)?.set_len(size).map_err(eio)?;
                m.touch(ino.0);
            }
            let n = m.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?;
            if let Some(mode) = mode {
                n.perm = (mode & 0o7777) as u16;
            }
            n.uid = uid.unwrap_or(n.uid);
            n.gid = gid.unwrap_or(n.gid);
            if let Some(t) = atime {
                n.atime = time(t);
            }
            if let Some(t) = mtime {
                n.mtime = time(t);
            }
            n.ctime = SystemTime::now();
            m.attr(ino.0)
        });
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        entry(
            reply,
            self.with(|m| {
                let ino = m.add(req, parent.0, name, mode & !umask, true)?;
                m.attr(ino)
            }),
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self.with(|m| {
            let ino = m.add(req, parent.0, name, mode & !umask, false)?;
            m.attr(ino)
        });
        match r {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.with(|m| m.remove(parent.0, name, false)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.with(|m| m.remove(parent.0, name, true)));
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
        empty(
            reply,
            self.with(|m| m.rename(parent.0, name, newparent.0, newname, flags)),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|m| m.node(ino.0).map(|_| ())) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
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
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let r = self.with(|m| {
            let f = m.file(ino.0)?;
            let mut buf = vec![0u8; size as usize];
            let mut filled = 0;
            while filled < buf.len() {
                match f.read_at(&mut buf[filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(eio(e)),
                }
            }
            buf.truncate(filled);
            Ok(buf)
        });
        match r {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
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
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self.with(|m| {
            m.file(ino.0)?.write_all_at(data, offset).map_err(eio)?;
            m.touch(ino.0);
            u32::try_from(data.len()).map_err(|_| Errno::EINVAL)
        });
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        empty(reply, self.live().map(|_| ()));
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // fdatasync keeps the size (what reading the data needs), so it counts as fsync.
        empty(reply, self.with(|m| m.sync(ino.0)));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.with(|m| {
            let mut list = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (ino.0, FileType::Directory, OsString::from("..")),
            ];
            for (name, child) in m.entries(ino.0)? {
                let kind = match m.node(*child)?.kind {
                    Kind::Dir(_) => FileType::Directory,
                    Kind::File => FileType::RegularFile,
                };
                list.push((*child, kind, name.clone()));
            }
            Ok(list)
        });
        match r {
            Ok(list) => {
                for (i, (ino, kind, name)) in list.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(ino), (i + 1) as u64, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Outside the lock: other requests go on meanwhile, as they do during a real fsync.
        std::thread::sleep(self.dir_sync_delay);
        empty(
            reply,
            self.with(|m| {
                if let Some((n, out)) = m.armed.as_mut() {
                    *n -= 1;
                    if *n == 0 {
                        let out = out.clone();
                        m.armed = None;
                        match m.power_cut(&out) {
                            Ok(line) => println!("{line}"),
                            Err(e) => println!("error writing the durable tree: {e}"),
                        }
                        return Err(Errno::EIO);
                    }
                }
                m.sync(ino.0)
            }),
        );
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Plenty of room: the backing directory's real free space is not the point here.
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        empty(reply, self.with(|m| m.node(ino.0).map(|_| ())));
    }
}

fn run() -> Result<(), String> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (state, mountpoint, delay_ms) = match args.as_slice() {
        [state, mnt] => (state, mnt, 0),
        [state, mnt, ms] => {
            let ms = ms.to_str().and_then(|m| m.parse().ok());
            (
                state,
                mnt,
                ms.ok_or("the delay is a number of milliseconds")?,
            )
        }
        _ => return Err("usage: powerfs <state-dir> <mountpoint> [<dir-fsync-delay-ms>]".into()),
    };
    let live = state.join("live");
    let durable = state.join("durable");
    for d in [&live, &durable] {
        fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        if fs::read_dir(d).map_err(|e| e.to_string())?.next().is_some() {
            return Err(format!(
                "{} is not empty: powerfs starts empty",
                d.display()
            ));
        }
    }
    let now = SystemTime::now();
    let root = Node {
        kind: Kind::Dir(BTreeMap::new()),
        perm: 0o755,
        uid: 0,
        gid: 0,
        mtime: now,
        atime: now,
        ctime: now,
    };
    let model = Arc::new(Mutex::new(Model {
        nodes: HashMap::from([(ROOT, root)]),
        next_ino: ROOT + 1,
        files: HashMap::new(),
        // The mount point itself exists durably, empty.
        durable_dirs: HashMap::from([(ROOT, BTreeMap::new())]),
        synced: HashSet::new(),
        live,
        durable,
        cut: false,
        armed: None,
    }));
    let mut config = Config::default();
    // No AutoUnmount: it needs fusermount3's watcher process, which does not survive in
    // every container. As root, fuser mounts with mount(2) directly; whoever kills this
    // process must `umount -l` the mount point (the test's guard does).
    config.mount_options = vec![MountOption::FSName("powerfs".into())];
    // Several threads, so a slow fsync does not stop the world.
    config.n_threads = Some(4);
    let fs = PowerFs {
        model: Arc::clone(&model),
        dir_sync_delay: Duration::from_millis(delay_ms),
    };
    let session = fuser::spawn_mount(fs, mountpoint, &config)
        .map_err(|e| format!("mounting FUSE on {}: {e}", mountpoint.display()))?;
    let mut out = io::stdout();
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;
    for line in io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let mut m = model.lock().unwrap_or_else(|e| e.into_inner());
        match line.split_once(' ') {
            Some(("cut", dir)) if !m.cut => {
                let answer = m
                    .power_cut(Path::new(dir))
                    .map_err(|e| format!("writing the durable tree: {e}"))?;
                writeln!(out, "{answer}")
                    .and_then(|()| out.flush())
                    .map_err(|e| e.to_string())?;
            }
            Some(("arm", rest)) => match rest.split_once(' ') {
                Some((n, dir)) if n.parse::<u64>().is_ok_and(|n| n > 0) => {
                    m.armed = n.parse().ok().map(|n| (n, PathBuf::from(dir)));
                }
                _ => eprintln!("powerfs: usage: arm <n> <dir>"),
            },
            _ if line.trim() == "exit" => break,
            _ => eprintln!("powerfs: unknown command {line:?}"),
        }
    }
    session
        .umount_and_join()
        .map_err(|e| format!("unmounting {}: {e}", mountpoint.display()))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("powerfs: {e}");
        std::process::exit(1);
    }
}
