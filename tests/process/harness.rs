//! The `otpgate` binary as a child process: a scratch directory for its
//! store, config and logs, free loopback ports, and a guard that kills the
//! process when a test ends, whether it passed or panicked.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};

/// A liveness bound for things that take milliseconds when all is well:
/// start-up, exit, a call reaching the simulator. Never a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How often a condition is looked at while waiting for it.
const POLL: Duration = Duration::from_millis(25);

/// A directory of its own under the system temp dir, removed on drop.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A fresh, empty directory; `label` makes it recognisable.
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("otpgate-process-{}-{label}-{n}", std::process::id());
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Self { path }
    }

    /// `name` inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `text` to `name` and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.file(name);
        std::fs::write(&path, text).expect("write scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A loopback port that was free a moment ago: bound on port 0, read, released.
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("bound address")
}

/// `otpgate` with an environment of its own: no `OTPGATE*` or `RUST_LOG`
/// from the test's environment, working directory in `scratch`.
pub fn otpgate(scratch: &Scratch, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_otpgate"));
    command.args(args).current_dir(&scratch.path);
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("OTPGATE") || name_text == "RUST_LOG" {
            command.env_remove(&name);
        }
    }
    command.stdin(Stdio::null()).kill_on_drop(true);
    command
}

/// Runs `command` to its end with captured output.
pub async fn run_to_end(mut command: Command) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let output = tokio::time::timeout(PATIENCE, command.output()).await;
    output
        .expect("otpgate exits on its own")
        .expect("run otpgate")
}

/// How a gateway process is started.
pub struct Launch<'a> {
    /// The simulator's base URL.
    pub upstream: &'a str,
    /// The SQLite file the gateway keeps its records in.
    pub store: &'a Path,
    /// Extra `OTPGATE__…` settings, after the scaled defaults.
    pub env: &'a [(&'a str, &'a str)],
}

/// The scaled pacing of the test simulator (5 calls per second), debug logs,
/// and timeouts short enough for tests.
const SCALED: &[(&str, &str)] = &[
    ("OTPGATE__PACING__WINDOW_SECONDS", "1"),
    ("OTPGATE__PACING__MARGIN_SECONDS", "0.02"),
    ("OTPGATE__PACING__BLOCK_COOLDOWN_SECONDS", "3"),
    ("OTPGATE__SERVER__SHUTDOWN_GRACE_SECONDS", "5"),
    ("OTPGATE__UPSTREAM__RESPONSE_TIMEOUT_SECONDS", "5"),
    ("OTPGATE__LOG__FILTER", "debug"),
];

/// A running `otpgate serve`; killed (SIGKILL) when dropped.
pub struct GatewayProcess {
    child: Child,
    /// Where bots connect.
    pub listen: SocketAddr,
    /// Where `/metrics` and `/healthz` are.
    pub admin: SocketAddr,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl GatewayProcess {
    /// Starts `otpgate serve` on fresh ports, its output in files named
    /// after `name` in `scratch`, and waits until `/healthz` answers.
    pub async fn start(scratch: &Scratch, name: &str, launch: Launch<'_>) -> Self {
        let listen = free_port();
        let admin = free_port();
        let stdout = scratch.file(&format!("{name}.stdout"));
        let stderr = scratch.file(&format!("{name}.stderr"));
        let args = [
            "serve".to_owned(),
            format!("--listen={listen}"),
            format!("--admin-listen={admin}"),
            format!("--upstream={}", launch.upstream),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();

        let mut command = otpgate(scratch, &args);
        command
            .envs(SCALED.iter().copied())
            .env("OTPGATE__STORE__PATH", launch.store)
            .envs(launch.env.iter().copied())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let child = command.spawn().expect("start otpgate");

        let mut gateway = Self {
            child,
            listen,
            admin,
            stdout,
            stderr,
        };
        gateway.wait_healthy().await;
        gateway
    }

    async fn wait_healthy(&mut self) {
        let http = client();
        let url = self.admin_url("/healthz");
        let give_up = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("otpgate exited with {status}: {}", self.output());
            }
            let answer = http.get(&url).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "otpgate never became healthy: {}",
                self.output()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// `http://LISTEN/api` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/api{path}", self.listen)
    }

    /// `http://ADMIN` + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Sends SIGTERM with the `kill` command, as an init system would.
    pub async fn terminate(&self) {
        let pid = self.child.id().expect("still running").to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// SIGKILL, then reap: the process gets no chance to tidy up.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL otpgate");
    }

    /// Waits for the process to exit on its own.
    pub async fn exit_status(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(PATIENCE, self.child.wait()).await;
        status
            .unwrap_or_else(|_| panic!("otpgate did not exit: {}", self.output()))
            .expect("wait for otpgate")
    }

    /// Everything written to stdout and stderr so far.
    pub fn output(&self) -> String {
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        format!("{}{}", read(&self.stdout), read(&self.stderr))
    }
}

/// A client that never uses a proxy, from 127.0.0.1.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// A client from 127.0.0.2, for the simulator itself: its calls count
/// against another IP than the gateway's.
pub fn direct_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client")
}

/// Polls `condition` until it holds or `PATIENCE` runs out; whether it held.
pub async fn eventually<F, Fut>(mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < give_up {
        if condition().await {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    false
}

/// Whether anything accepts connections on `addr`.
pub fn listening(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}
