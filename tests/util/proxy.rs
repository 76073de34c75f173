//! A unix-socket proxy in front of Redis whose upstream can be switched: connections made
//! after a switch go to the new upstream (or, with none, are accepted and never answered, as
//! by a host that went silent), open ones stay with the old one (as clients of a failed-over
//! primary that is still up). Threads end with their connections.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::TempDir;

pub struct SwitchProxy {
    pub path: PathBuf,
    upstream: Arc<Mutex<Option<PathBuf>>>,
    _dir: TempDir,
}

impl SwitchProxy {
    pub fn start(upstream: PathBuf) -> SwitchProxy {
        let dir = TempDir::new("proxy");
        let path = dir.join("proxy.sock");
        let listener = UnixListener::bind(&path).expect("bind proxy");
        let upstream = Arc::new(Mutex::new(Some(upstream)));
        let target = upstream.clone();
        std::thread::spawn(move || {
            let mut silent = Vec::new();
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let to = target.lock().expect("upstream").clone();
                let Some(to) = to else {
                    silent.push(client); // held open, never answered
                    continue;
                };
                let Ok(server) = UnixStream::connect(&to) else { continue };
                let pump = |mut from: UnixStream, mut to: UnixStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                    pump(client, server);
                    pump(s2, c2);
                }
            }
        });
        SwitchProxy { path, upstream, _dir: dir }
    }

    /// The `--bus` URL through the proxy.
    pub fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Where connections made from now on go (`None`: nowhere, they hang).
    pub fn switch_to(&self, upstream: Option<PathBuf>) {
        *self.upstream.lock().expect("upstream") = upstream;
    }
}
