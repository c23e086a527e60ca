//! Endpoint: where a server is and how to authenticate — found through the data dir
//! (`server.json` says a server runs; its Unix socket and `token` are used) or given with a URL
//! and a token (TCP). A client found through the data dir finds a restarted server again the
//! same way ([`Client::rediscover`]).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use corral_server::datadir;
use corral_server::unix::socket_path;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::ClientError;

/// How long a connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A byte stream to a server (TCP or Unix).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open stream to a server.
pub type Stream = Pin<Box<dyn Io>>;

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket (a local server's data dir).
    Unix(PathBuf),
    /// host:port over TCP.
    Tcp(String),
}

impl Endpoint {
    /// For messages: the socket path or host:port.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Unix(p) => p.display().to_string(),
            Endpoint::Tcp(a) => a.clone(),
        }
    }

    /// The Host header value.
    pub fn host(&self) -> &str {
        match self {
            Endpoint::Unix(_) => "localhost",
            Endpoint::Tcp(a) => a,
        }
    }

    /// The data dir of a Unix endpoint (its socket's folder).
    fn data_dir(&self) -> PathBuf {
        match self {
            Endpoint::Unix(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
            Endpoint::Tcp(_) => PathBuf::new(),
        }
    }

    /// Whether the server the data dir's `server.json` names no longer runs (or none is named).
    fn server_gone(&self) -> bool {
        match datadir::read_server_json(&self.data_dir()) {
            Ok(info) => !std::path::Path::new(&format!("/proc/{}", info.pid)).exists(),
            Err(_) => true,
        }
    }

    /// Opens a stream (bounded by [`CONNECT_TIMEOUT`]); TCP gets TCP_NODELAY (a keystroke goes
    /// out at once, not behind an unacked one). A Unix socket must be served by this user (its
    /// peer's uid, `SO_PEERCRED`), as the server checks its clients: the token goes to no
    /// other user's process, whatever data dir was given.
    pub async fn connect(&self) -> Result<Stream, ClientError> {
        // The stream, and for a Unix socket the uid of the process serving it.
        let connect = async {
            Ok::<(Stream, Option<u32>), std::io::Error>(match self {
                Endpoint::Unix(p) => {
                    let s = tokio::net::UnixStream::connect(p).await?;
                    let uid = s.peer_cred()?.uid();
                    (Box::pin(s), Some(uid))
                }
                Endpoint::Tcp(a) => {
                    let s = tokio::net::TcpStream::connect(a).await?;
                    s.set_nodelay(true)?;
                    (Box::pin(s), None)
                }
            })
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            // SAFETY: geteuid has no preconditions and cannot fail.
            Ok(Ok((_, Some(uid)))) if uid != unsafe { libc::geteuid() } => {
                Err(ClientError::NotOurs {
                    path: PathBuf::from(self.describe()),
                    uid,
                })
            }
            Ok(Ok((s, _))) => Ok(s),
            // The data dir's socket with nobody behind it, and the server `server.json` names
            // is gone: a server that was killed (it leaves both behind; its lock went with it).
            // Said as when no server ever ran there, not as a connection problem.
            Ok(Err(source))
                if matches!(self, Endpoint::Unix(_))
                    && source.kind() == std::io::ErrorKind::ConnectionRefused
                    && self.server_gone() =>
            {
                Err(ClientError::NoServer(self.data_dir()))
            }
            Ok(Err(source)) => Err(ClientError::Connect {
                addr: self.describe(),
                source,
            }),
            Err(_) => Err(ClientError::Timeout(self.describe())),
        }
    }
}

/// A server and the token to use with it (its `Debug` leaves the token out).
#[derive(Clone)]
pub struct Client {
    /// Where it listens.
    pub endpoint: Endpoint,
    /// Bearer token.
    pub token: String,
    /// Found through this data dir (with the token given, if one was): a restarted server is
    /// found again the same way.
    found_in: Option<(PathBuf, Option<String>)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("found_in", &self.found_in.as_ref().map(|(dir, _)| dir))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// From flags (`--url`, `--token`), else from the data dir; a clear error when no server
    /// runs there.
    pub fn find(
        url: Option<String>,
        token: Option<String>,
        data_dir: &Path,
    ) -> Result<Client, ClientError> {
        let found_in = url
            .is_none()
            .then(|| (data_dir.to_path_buf(), token.clone()));
        let mut endpoint = match &url {
            Some(u) => Endpoint::Tcp(tcp_addr(u)?),
            None => {
                match datadir::read_server_json(data_dir) {
                    Ok(_) => {}
                    // Not "no server": one may run there, and this user may not look (a data
                    // dir of mode 000, another user's).
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        return Err(ClientError::DataDir {
                            path: data_dir.join("server.json"),
                            source: e,
                        });
                    }
                    Err(_) => return Err(ClientError::NoServer(data_dir.to_path_buf())),
                }
                Endpoint::Unix(socket_path(data_dir))
            }
        };
        let token = match token {
            Some(t) => t,
            // The data dir's admin token goes only to the server of that data dir: a `--url`
            // naming another server needs its own token (it would be handed to whoever listens
            // there).
            None => {
                if let Some(u) = &url {
                    // The data dir's server, named as it publishes itself or as `localhost`:
                    // reached at the address it published (another user's listener on the
                    // other loopback address would not get the token).
                    match datadir::read_server_json(data_dir) {
                        Ok(s) if same_server(u, &s.url) => {
                            endpoint = Endpoint::Tcp(tcp_addr(&s.url)?)
                        }
                        _ => return Err(ClientError::TokenForUrl(u.clone())),
                    }
                }
                datadir::read_token(data_dir)
                    .map_err(|_| ClientError::NoToken(data_dir.to_path_buf()))?
            }
        };
        Ok(Client {
            endpoint,
            token,
            found_in,
        })
    }

    /// A client of the server at `url` (`http://host:port`) with `token`, over TCP.
    pub fn tcp(url: &str, token: impl Into<String>) -> Result<Client, ClientError> {
        Ok(Client {
            endpoint: Endpoint::Tcp(tcp_addr(url)?),
            token: token.into(),
            found_in: None,
        })
    }

    /// The same server with another token.
    pub fn with_token(&self, token: impl Into<String>) -> Client {
        Client {
            token: token.into(),
            found_in: None,
            ..self.clone()
        }
    }

    /// The server as the data dir describes it now; itself when it was given by URL, or when
    /// the data dir names no running server.
    pub fn rediscover(&self) -> Client {
        match &self.found_in {
            Some((dir, token)) => {
                Client::find(None, token.clone(), dir).unwrap_or_else(|_| self.clone())
            }
            None => self.clone(),
        }
    }
}

/// host:port of an `http://host[:port][/]` URL (port 80 when it names none).
fn tcp_addr(url: &str) -> Result<String, ClientError> {
    let (host, port) = host_port(url).ok_or_else(|| ClientError::BadUrl(url.to_string()))?;
    Ok(format!("{host}:{port}"))
}

/// The host (lower case; an IPv6 one in brackets) and port of a server's URL, checked as the
/// server checks one (`HttpUrl`), with nothing after its host but `/` (the API's paths are
/// absolute: a prefix would be lost).
fn host_port(url: &str) -> Option<(String, u16)> {
    let url = corral_server::http_url::HttpUrl::parse(url).ok()?;
    (url.path == "/").then(|| (url.host.to_ascii_lowercase(), url.port))
}

/// Whether `given` names the server that published `published`: the same host and port, or
/// `localhost` for its loopback address.
fn same_server(given: &str, published: &str) -> bool {
    let (Some((given, port)), Some((host, published_port))) =
        (host_port(given), host_port(published))
    else {
        return false;
    };
    let loopback = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    port == published_port && (given == host || (given == "localhost" && loopback))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_server_by_host_and_port() {
        assert_eq!(
            tcp_addr("http://127.0.0.1:7070/").unwrap(),
            "127.0.0.1:7070"
        );
        assert_eq!(tcp_addr("http://Box.local").unwrap(), "box.local:80");
        assert_eq!(tcp_addr("http://[::1]:7070").unwrap(), "[::1]:7070");
        for bad in [
            "https://box:7070",
            "http://box:7070/corral/",
            "box:7070",
            "http://u:p@box",
            "http://box:70700",
            "http://box:7O70",
            "http://box:",
        ] {
            assert!(tcp_addr(bad).is_err(), "{bad}");
        }
        let published = "http://127.0.0.1:7070";
        assert!(same_server("http://127.0.0.1:7070/", published));
        assert!(same_server("http://localhost:7070", published));
        assert!(same_server("http://localhost:7070", "http://[::1]:7070"));
        assert!(!same_server("http://localhost:7071", published));
        assert!(!same_server("http://127.0.0.2:7070", published));
        assert!(!same_server(
            "http://localhost:7070",
            "http://192.168.1.5:7070"
        ));
    }

    /// A data dir's socket served by another user's process is refused before anything is
    /// sent (the token would go to that process). Needs root, to start a listener as `nobody`
    /// (the CI runs as root).
    #[tokio::test]
    async fn a_socket_served_by_another_user_is_refused() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root,
            "this test starts a process as another user: run it as root"
        );
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.path().join("corral.sock");
        use std::os::unix::process::CommandExt;
        let listen = "import socket, sys\n\
                      s = socket.socket(socket.AF_UNIX)\n\
                      s.bind(sys.argv[1])\n\
                      s.listen()\n\
                      print('ready', flush=True)\n\
                      while True:\n    s.accept()\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", listen])
            .arg(&path)
            .uid(65534)
            .gid(65534)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 (the CI installs it)");
        let mut ready = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready");
        let got = Endpoint::Unix(path.clone()).connect().await;
        child.kill().unwrap();
        child.wait().unwrap();
        match got {
            Err(ClientError::NotOurs { uid: 65534, .. }) => {}
            Err(e) => panic!("expected NotOurs, got {e}"),
            Ok(_) => panic!("expected NotOurs, got a stream"),
        }
        // A socket of this user's is taken.
        let own = dir.path().join("own.sock");
        let _listener = tokio::net::UnixListener::bind(&own).unwrap();
        assert!(Endpoint::Unix(own).connect().await.is_ok());
    }
}
