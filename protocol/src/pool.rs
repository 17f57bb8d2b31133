//! [`Pool`]: clients shared by threads. A thread takes a client, uses it and
//! gives it back by dropping the guard; a client whose connection was lost
//! is dropped instead of returned, and one left idle longer than
//! [`POOL_IDLE_MAX`] is replaced rather than reused (the server may have
//! closed it, and a write on it would end as of unknown outcome). At most
//! `size` connections are open.

use crate::client::{Client, ClientError, ClientOptions};
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest a pooled connection may sit unused and still be handed out: well
/// under the server's default idle timeout (300 s).
pub const POOL_IDLE_MAX: Duration = Duration::from_secs(60);

/// A bounded pool of connections to one server.
pub struct Pool {
    addr: SocketAddr,
    options: ClientOptions,
    size: usize,
    state: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    /// Clients given back, with when.
    idle: Vec<(Client, Instant)>,
    /// Clients open, idle or taken.
    open: usize,
}

/// A client taken from a [`Pool`]; goes back on drop.
pub struct Pooled<'p> {
    pool: &'p Pool,
    client: Option<Client>,
}

impl Pool {
    /// A pool of at most `size` connections (at least 1) to `addr`.
    pub fn new(addr: SocketAddr, options: ClientOptions, size: usize) -> Pool {
        Pool {
            addr,
            options,
            size: size.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding the lock leaves the state consistent (it is
        // two plain fields), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle client, a new one if fewer than `size` are open, or the
    /// next one given back, waiting at most the connect timeout.
    pub fn get(&self) -> Result<Pooled<'_>, ClientError> {
        let deadline = Instant::now() + self.options.connect_timeout;
        let mut state = self.lock();
        loop {
            if let Some((client, since)) = state.idle.pop() {
                if since.elapsed() <= POOL_IDLE_MAX {
                    return Ok(Pooled {
                        pool: self,
                        client: Some(client),
                    });
                }
                // Stale: close it and open a fresh one in its place.
                state.open -= 1;
                drop(client);
                continue;
            }
            if state.open < self.size {
                state.open += 1;
                drop(state);
                return match Client::connect(self.addr, self.options.clone()) {
                    Ok(client) => Ok(Pooled {
                        pool: self,
                        client: Some(client),
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("all {} pooled connections are busy", self.size),
                )));
            }
            state = self
                .returned
                .wait_timeout(state, deadline - now)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Connections open now, idle or taken.
    pub fn open(&self) -> usize {
        self.lock().open
    }
}

impl Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        // Present until drop.
        self.client
            .as_ref()
            .expect("a pooled client is present until dropped")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("a pooled client is present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        match self.client.take() {
            Some(c) if c.is_connected() => state.idle.push((c, Instant::now())),
            _ => state.open -= 1,
        }
        drop(state);
        self.pool.returned.notify_one();
    }
}
