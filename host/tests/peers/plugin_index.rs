//! A plugin mirror on loopback: serves files (an index, plugins,
//! signatures) by path, answers 404 for anything else, and can be told to
//! stall on a path (a slow server). It runs on a thread of its own, so
//! synchronous tests can drive the `keel` binary while it serves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// What the mirror does for one path.
#[derive(Debug, Clone)]
pub enum Served {
    File(Vec<u8>),
    /// Waits this long before answering (longer than keel's timeout).
    Stall(Duration, Vec<u8>),
}

/// The running mirror; stops when dropped.
pub struct PluginMirror {
    pub addr: SocketAddr,
    files: Arc<Mutex<HashMap<String, Served>>>,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for PluginMirror {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl PluginMirror {
    pub fn start() -> PluginMirror {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let files: Arc<Mutex<HashMap<String, Served>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (task_files, task_requests) = (files.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let (files, requests) = (task_files.clone(), task_requests.clone());
                            tokio::spawn(async move {
                                let _ = answer(stream, &files, &requests).await;
                            });
                        }
                    }
                }
            });
        });
        PluginMirror { addr, files, requests, stop: Some(stop), thread: Some(thread) }
    }

    /// Serves `bytes` at `path` (starting with `/`).
    pub fn put(&self, path: &str, served: Served) {
        self.files.lock().unwrap().insert(path.to_owned(), served);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The paths requested so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn answer(
    stream: tokio::net::TcpStream,
    files: &Mutex<HashMap<String, Served>>,
    requests: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await? == 0 || header.trim().is_empty() {
            break;
        }
    }
    requests.lock().unwrap().push(path.clone());
    let served = files.lock().unwrap().get(&path).cloned();
    let (status, body) = match served {
        None => ("404 Not Found", b"not found".to_vec()),
        Some(Served::File(bytes)) => ("200 OK", bytes),
        Some(Served::Stall(delay, bytes)) => {
            tokio::time::sleep(delay).await;
            ("200 OK", bytes)
        }
    };
    let mut stream = reader.into_inner();
    let head = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}
