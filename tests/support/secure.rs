//! TLS and SASL around Tansu 0.6.0, which cannot serve TLS itself in a usable way (its `--cert`
//! and `--key` flags are in one exclusive argument group, so they cannot be given together):
//! Debian's stunnel terminates TLS (and checks client certificates for mTLS) in front of it, and
//! Tansu advertises stunnel's port. `--authentication` makes Tansu require SASL SCRAM; its users
//! are created through the admin API (AlterUserScramCredentials) while it still runs without it,
//! on storage that survives the restart.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, repo_path, Process, Tansu};

/// A test CA, a server certificate for 127.0.0.1 and a client certificate, made by the openssl CLI.
pub struct Certificates {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output().expect("openssl (Debian's openssl package) runs");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

impl Certificates {
    pub fn generate(dir: &Path) -> Certificates {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(dir, &[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=tracepipe test CA"]].concat());
        for (name, subject, extensions) in [("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "/CN=tracepipe", "extendedKeyUsage=clientAuth")] {
            let (key, csr, cert, ext) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
            std::fs::write(dir.join(&ext), extensions).unwrap();
            openssl(dir, &[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", subject]].concat());
            openssl(dir, &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &cert, "-days", "2", "-extfile", &ext]);
        }
        Certificates {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

/// stunnel terminating TLS on `port` in front of Tansu's plain listener.
pub struct Stunnel {
    pub port: u16,
    _process: Process,
}

impl Stunnel {
    /// With `client_certificates`, only clients presenting a certificate signed by the test CA
    /// get through (mTLS).
    pub fn start(dir: &Path, tansu_port: u16, certificates: &Certificates, client_certificates: bool) -> Stunnel {
        let port = free_port();
        let mut config = format!(
            "foreground = yes\npid =\ndebug = notice\n[kafka]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{tansu_port}\ncert = {}\nkey = {}\n",
            certificates.server_cert.display(),
            certificates.server_key.display()
        );
        if client_certificates {
            config.push_str(&format!("CAfile = {}\nverifyChain = yes\nrequireCert = yes\n", certificates.ca.display()));
        }
        let path = dir.join(format!("stunnel-{port}.conf"));
        std::fs::write(&path, config).unwrap();
        let process = Process::spawn_program(stunnel_binary(), &[path.to_str().unwrap()], dir, "stunnel");
        super::wait_for_port(port, &process);
        Stunnel { port, _process: process }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn stunnel_binary() -> &'static str {
    if Path::new("/usr/bin/stunnel4").exists() { "/usr/bin/stunnel4" } else { "stunnel" }
}

/// The Python with confluent-kafka that `make python` installs.
pub fn python_client(args: &[&str]) -> String {
    let python = repo_path("target/python/bin/python");
    assert!(python.exists(), "{} is missing; `make python` (part of `make test`) installs it", python.display());
    let output = Command::new(python).arg(repo_path("tests/python/kafka_client.py")).args(args).stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "kafka_client.py {args:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Restarts `tansu` (on storage that survives it) requiring SASL and advertising `advertised_port`.
pub fn restart_secured(tansu: &mut Tansu, advertised_port: u16, authentication: bool) {
    tansu.advertised_port = Some(advertised_port);
    tansu.authentication = authentication;
    tansu.restart();
    // Tansu accepts connections a moment before it answers them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && std::net::TcpStream::connect(("127.0.0.1", tansu.port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
}
