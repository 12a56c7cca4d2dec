//! The change signal of the PostgreSQL backend: a connection of its own that listens on the
//! keys table's channel, with an end-to-end heartbeat, and the stamp it moves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::AsyncMessage;

/// The channel the keys table's trigger notifies.
pub(super) const CHANNEL: &str = "g2p_kms_keys";
/// How often the listener pings itself, and how long a ping has to come back.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(2);

/// The change signal: moved by every notification, by this process's writes, and at each
/// (re)connection of the listener.
#[derive(Debug, Default)]
pub(super) struct Changes {
    pub(super) generation: AtomicU64,
    pub(super) listening: AtomicBool,
}

impl Changes {
    pub(super) fn moved(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// Keeps a connection listening for changes, reconnecting with backoff; moves the stamp on
/// each change notification and each (re)connection, and clears `listening` while it is down.
pub(super) async fn listen(
    (config, tls): (
        tokio_postgres::Config,
        tokio_postgres_rustls::MakeRustlsConnect,
    ),
    pool: Pool,
    changes: Arc<Changes>,
    location: String,
) {
    let mut backoff = Duration::from_millis(100);
    let mut reported = false;
    let mut me = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut me);
    let me = hex::encode(me);
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    while let Some(message) =
                        std::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_string()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .await
                    .is_ok()
                {
                    let heard = heed(&pool, &me, &mut rx, &changes).await;
                    if heard && reported {
                        tracing::info!(store = %location, "listening for key changes again");
                        reported = false;
                    }
                    if heard {
                        backoff = Duration::from_millis(100);
                    }
                }
                changes.listening.store(false, Ordering::SeqCst);
                changes.moved();
                driver.abort();
            }
            Err(e) => {
                if !reported {
                    tracing::warn!(store = %location, error = %g2p_postgres::describe_error(&e), "cannot listen for key changes; caches are bypassed until the database answers");
                    reported = true;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(HEARTBEAT);
    }
}

/// Moves the stamp on each change notification. Every [`HEARTBEAT`] it notifies a ping of
/// its own through another connection and must hear it back before the next: only then do
/// notifications provably arrive (a pooler in transaction mode, say, would lose them), and
/// only then is `listening` set. Returns, with `listening` to be cleared, when a ping is not
/// heard in time or the connection ends; `true` if any ping was heard.
async fn heed(
    pool: &Pool,
    me: &str,
    notifications: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    changes: &Changes,
) -> bool {
    let mut heard = false;
    let mut sent = 0u64;
    let mut awaited: Option<String> = None;
    let mut ticks = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            received = notifications.recv() => match received {
                Some(payload) => match payload.strip_prefix("ping:") {
                    Some(ping) => {
                        if awaited.as_deref() == Some(ping) {
                            awaited = None;
                            if !heard {
                                heard = true;
                                changes.listening.store(true, Ordering::SeqCst);
                                // Changes made before this moment may have been missed.
                                changes.moved();
                            }
                        }
                    }
                    None => changes.moved(),
                },
                None => return heard,
            },
            _ = ticks.tick() => {
                if awaited.is_some() {
                    return heard;
                }
                sent += 1;
                let ping = format!("{me}:{sent}");
                let notified = tokio::time::timeout(HEARTBEAT, async {
                    let client = pool.get().await.ok()?;
                    client
                        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &format!("ping:{ping}")])
                        .await
                        .ok()
                })
                .await;
                if !matches!(notified, Ok(Some(_))) {
                    return heard;
                }
                awaited = Some(ping);
            }
        }
    }
}
