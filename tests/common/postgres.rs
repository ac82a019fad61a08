//! A throwaway PostgreSQL server for tests: Debian's `postgresql` binaries, a
//! fresh cluster in a temporary directory, a free loopback port, no system
//! service. Run as the `postgres` user when the tests run as root (PostgreSQL
//! refuses root). Stopped and deleted on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running throwaway server.
pub struct Postgres {
    child: Child,
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
}

/// The directory of `initdb` and `postgres`: the newest of Debian's
/// `/usr/lib/postgresql/*/bin`, else `PATH`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").exists());
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): \
             apt-get install -y postgresql (.ci/run does this)"
        )
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// `program` from `bin`, as the `postgres` user when we are root (from `/`:
/// the test's own directory may be closed to that user, and psql would say
/// so in its output).
fn command(bin: &Path, program: &str) -> Command {
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    };
    c.current_dir("/");
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    /// Creates and starts a cluster: the superuser `postgres` (trusted on its
    /// Unix socket only), passwords (scram) over TCP.
    pub fn start() -> Postgres {
        Self::start_with(None)
    }

    /// Like [`Postgres::start`], but TCP clients must use TLS: a certificate
    /// for `127.0.0.1`/`localhost` signed by a CA made for this cluster
    /// (`tls.ca`); plaintext TCP connections are rejected.
    pub fn start_tls(tls: &Tls) -> Postgres {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<&Tls>) -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("stockade-pg")
            .tempdir()
            .unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the cluster directory");
        }
        let data = dir.path().join("data");
        let out = command(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(tls) = tls {
            // The server's key and certificate, readable by the server alone.
            for (from, to) in [
                (&tls.server_cert, "server.crt"),
                (&tls.server_key, "server.key"),
            ] {
                std::fs::copy(from, data.join(to)).unwrap();
            }
            let conf = "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n";
            let mut c = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
            c.push_str(conf);
            std::fs::write(data.join("postgresql.conf"), c).unwrap();
            // TLS or nothing over TCP.
            let hba = "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n\
                       hostnossl all all 0.0.0.0/0 reject\n";
            std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
            if is_root() {
                let status = Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&data)
                    .status()
                    .unwrap();
                assert!(status.success());
            }
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        let port = free_port();
        let child = command(&bin, "postgres")
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pg = Postgres {
            child,
            dir,
            bin,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pg.psql("postgres", "SELECT 1").0 {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pg
    }

    /// Runs `sql` as the superuser in `db` over the Unix socket; (ok, output).
    pub fn psql(&self, db: &str, sql: &str) -> (bool, String) {
        let out = command(&self.bin, "psql")
            .arg("-h")
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .args([
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAt",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Like [`Postgres::psql`], and panics when it fails.
    pub fn run(&self, db: &str, sql: &str) -> String {
        let (ok, out) = self.psql(db, sql);
        assert!(ok, "psql failed: {out}\n{sql}");
        out
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: "fast" shutdown.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A certificate authority and a server certificate for `127.0.0.1` and
/// `localhost` it signed, made with the `openssl` command in a temporary
/// directory.
pub struct Tls {
    _dir: tempfile::TempDir,
    /// The CA's certificate (PEM).
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub server_cert: PathBuf,
    /// The server's private key (PEM).
    pub server_key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Tls {
    /// A fresh CA (`name` in its subject) and a server certificate it signed.
    pub fn new(name: &str) -> Tls {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name} test CA"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            d,
        );
        openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
            d,
        );
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
            d,
        );
        Tls {
            ca: d.join("ca.pem"),
            server_cert: d.join("server.crt"),
            server_key: d.join("server.key"),
            _dir: dir,
        }
    }
}
