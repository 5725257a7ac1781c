//! A real PostgreSQL server for tests: `initdb` into a temp dir and `postgres` on a free
//! loopback port, stopped by PID when dropped. PostgreSQL refuses to run as root, so when
//! the tests do (CI), the server runs as the `postgres` account Debian's package creates.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The role every test database belongs to (`initdb -U`), with trust auth on loopback.
pub const USER: &str = "airdock";

/// A running PostgreSQL with a fresh cluster.
pub struct Postgres {
    child: Option<Child>,
    pub port: u16,
    /// The cluster is `data/` under it; the server's log is `log`.
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    /// uid/gid to run as (`None`: as ourselves).
    user: Option<(u32, u32)>,
    /// `ssl=on` with this certificate and key file (see [`Postgres::enable_tls`]).
    tls: Option<(PathBuf, PathBuf)>,
}

/// Where the server binaries are: `$AIRDOCK_PG_BIN`, else the directory of `initdb` on the
/// PATH, else Debian's `/usr/lib/postgresql/<newest>/bin`.
pub fn bin_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("AIRDOCK_PG_BIN") {
        return p.into();
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            // Debian links a version's binaries into the PATH at most: follow the link to
            // the directory that has all of them (psql too).
            if let Ok(initdb) = std::fs::canonicalize(dir.join("initdb")) {
                if let Some(real) = initdb.parent().filter(|d| d.join("postgres").is_file()) {
                    return real.to_owned();
                }
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).unwrap_or_else(|| {
        panic!("PostgreSQL is not installed (initdb not found): run scripts/install-deps.sh")
    })
}

/// The `postgres` account's uid and gid, from /etc/passwd.
fn postgres_account() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .unwrap_or_else(|| {
            panic!(
                "running as root, and there is no `postgres` account to run PostgreSQL as: \
                 run scripts/install-deps.sh (Debian's postgresql package creates it)"
            )
        })
}

static DATABASES: AtomicU32 = AtomicU32::new(0);

impl Postgres {
    /// `initdb` a cluster and start it; wait until it takes connections. Panics with the
    /// server's log when it cannot: a test that needs PostgreSQL must not pass without it.
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().expect("temp dir");
        let user = rustix::process::geteuid().is_root().then(postgres_account);
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown temp dir");
        }
        let bin = bin_dir();
        let out = command(&bin.join("initdb"), user)
            .args([
                "--no-sync",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
            ])
            .arg(format!("--username={USER}"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut pg = Postgres {
            child: None,
            port,
            dir,
            bin,
            user,
            tls: None,
        };
        pg.resume();
        pg
    }

    /// Start the server again on the same cluster and port (after [`Postgres::stop`]).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("log")).expect("log file");
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(self.dir.path().join("log"), Some(uid), Some(gid))
                .expect("chown log");
        }
        let child = command(&self.bin.join("postgres"), self.user)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("port={}", self.port))
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            // Test clusters: durability of the database itself is not what is tested.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .args(self.tls.iter().flat_map(|(cert, key)| {
                [
                    "-c".to_owned(),
                    "ssl=on".to_owned(),
                    "-c".to_owned(),
                    format!("ssl_cert_file={}", cert.display()),
                    "-c".to_owned(),
                    format!("ssl_key_file={}", key.display()),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        // Accepting connections is not enough: until its startup is over the server answers
        // "the database system is starting up". Ready is a query that succeeds.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new(self.psql_bin())
                .arg(self.url("postgres"))
                .args(["-q", "-c", "SELECT 1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            if Instant::now() > deadline || self.exited() {
                panic!("postgres did not start:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn psql_bin(&self) -> PathBuf {
        self.bin.join("psql")
    }

    /// Restart the server with TLS on (plaintext connections are still taken): `cert_pem` is
    /// its certificate chain, `key_pem` its key.
    pub fn enable_tls(&mut self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        self.stop();
        let cert = self.dir.path().join("server.crt");
        let key = self.dir.path().join("server.key");
        std::fs::write(&cert, cert_pem).expect("write server.crt");
        std::fs::write(&key, key_pem).expect("write server.key");
        // PostgreSQL refuses a key file others may read.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
        if let Some((uid, gid)) = self.user {
            for f in [&cert, &key] {
                std::os::unix::fs::chown(f, Some(uid), Some(gid)).expect("chown tls file");
            }
        }
        self.tls = Some((cert, key));
        self.resume();
    }

    /// Stop the server (fast shutdown: SIGINT to its PID) and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            }
            let _ = child.wait();
        }
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// A new empty database; its URL.
    pub fn database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new(self.psql_bin())
            .arg(self.url("postgres"))
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "CREATE DATABASE failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    /// Run `sql` in the database at `url` with psql; its output (unaligned, tuples only).
    pub fn psql(&self, url: &str, sql: &str) -> String {
        let out = Command::new(self.psql_bin())
            .arg(url)
            .args(["-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn command(program: &Path, user: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(program);
    if let Some((uid, gid)) = user {
        c.uid(uid).gid(gid);
    }
    c
}
