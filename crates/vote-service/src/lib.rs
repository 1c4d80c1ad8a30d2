//! What every service binary shares: the allocator, logging set-up, the guarded listener every
//! socket of the project is served through ([`listen`]), the Prometheus `/metrics` and `/healthz`
//! endpoint, the admission queue in front of a bound on requests ([`admission`]), a shutdown signal that fires on SIGTERM or Ctrl-C, the `--check-config` support in
//! [`config_check`], and the vote metrics both producers export ([`vote_metrics`]).

pub mod admission;
pub mod listen;
pub mod vote_metrics;

use std::net::SocketAddr;

pub mod config_check;

use axum::{http::header, response::IntoResponse, routing::get, Router};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::sync::watch;

/// Every service binary allocates through mimalloc: the wasm host's per-request churn (a store,
/// an instance and HTTP buffers per request) costs measurably less CPU than with glibc malloc,
/// and both producers use the same allocator so the comparison stays fair.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option: its place in `mi_option_t`, the same in mimalloc 2 and 3 (the
/// crate does not export it; `purge_delay_index_is_mimallocs` checks it against the library).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps what the allocator holds resident close to what the program uses:
/// - mimalloc returns a page to the OS as soon as it is free, unless `MIMALLOC_PURGE_DELAY` says
///   otherwise. By default it waits and purges only when the same thread allocates again, so what
///   threads that then go idle freed (the compile threads at start-up, a burst's worker heaps)
///   stayed resident: 40 to 70 MiB of the wasm host, measured (docs/benchmarks.md).
/// - The process takes no transparent huge pages, unless `MIMALLOC_ALLOW_THP` is set. mimalloc
///   asks for them on its arena, reserved before `main`; where the kernel grants them on request
///   (`madvise`, Debian's default) a 2 MiB page stays resident while any 4 KiB of it is in use:
///   the idle wasm host held 85 to 88 MiB with them, 48 to 50 MiB without (docs/decisions.md).
pub fn keep_resident_memory_low() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an allocator option; mimalloc reads options atomically.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        if let Err(error) = nix::sys::prctl::set_thp_disable(true) {
            tracing::debug!(%error, "could not turn transparent huge pages off");
        }
    }
}

/// Sets up `tracing` with the `RUST_LOG` filter (default `info`), raises the open-files limit to
/// its hard limit so the listeners' connection bounds, not file descriptors, decide when clients
/// are turned away, and keeps the allocator's resident memory low
/// ([`keep_resident_memory_low`]).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    // After the subscriber, so that a failure to turn huge pages off is logged.
    keep_resident_memory_low();
    match listen::raise_open_files_limit() {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open files limit"),
    }
}

/// Renders a registry in the Prometheus text format.
pub fn render_metrics(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    // Encoding into a Vec cannot fail for the text format.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buffer);
    String::from_utf8(buffer).unwrap_or_default()
}

/// A router with `/metrics` (Prometheus text) and `/healthz` (always `ok` while serving).
pub fn metrics_router(registry: Registry) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = render_metrics(&registry);
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response() }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
}

/// Serves `router` on `addr` until `shutdown` fires, as an internal endpoint (metrics, health,
/// admin: [`listen::ListenLimits::internal`]). Binding happens before this returns, so a port that
/// is taken is reported at start-up.
pub async fn spawn_http(addr: SocketAddr, router: Router, shutdown: Shutdown) -> anyhow::Result<SocketAddr> {
    let listener = listen::Listener::bind(addr, listen::ListenLimits::internal(), listen::ListenMetrics::unregistered("internal")).await?;
    spawn_router(listener, router, shutdown)
}

/// Serves `router` on an already bound guarded listener until `shutdown` fires; returns its address.
pub fn spawn_router(listener: listen::Listener, router: Router, shutdown: Shutdown) -> anyhow::Result<SocketAddr> {
    let bound = listener.local_addr()?;
    tokio::spawn(serve_router(listener, router, shutdown));
    Ok(bound)
}

/// Serves `router` on `listener` until `shutdown` fires and the requests in flight are done.
pub async fn serve_router(listener: listen::Listener, router: Router, shutdown: Shutdown) {
    let service = hyper_util::service::TowerToHyperService::new(router);
    listen::serve_http(listen::ServeHttp { listener, shutdown, on_refused: None, header_read_timeout: None }, service).await
}

/// A shutdown signal that many tasks can wait on.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A signal that fires on SIGTERM or Ctrl-C.
    pub fn on_signals() -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested");
            let _ = tx.send(true);
        });
        Self(rx)
    }

    /// A signal fired by sending `true` on the returned sender (tests, embedders).
    pub fn manual() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Whether shutdown was requested.
    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until shutdown is requested.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod allocator_tests {
    use super::MI_OPTION_PURGE_DELAY;

    /// Run with `MIMALLOC_PURGE_DELAY=4321` by [`purge_delay_index_is_mimallocs`]: the option at
    /// our index is the one mimalloc read from that variable.
    #[test]
    #[ignore = "run by purge_delay_index_is_mimallocs in a child process"]
    fn purge_delay_read_from_the_environment() {
        // SAFETY: reads an allocator option.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, 4321);
    }

    /// What a service sets at start-up holds: no purge delay, and the kernel gives the process
    /// no transparent huge pages.
    #[test]
    #[cfg(target_os = "linux")]
    fn start_up_purges_at_once_and_takes_no_huge_pages() {
        super::keep_resident_memory_low();
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads an allocator option.
            assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, 0);
        }
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
            assert!(nix::sys::prctl::get_thp_disable().unwrap(), "transparent huge pages still allowed");
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            assert!(status.lines().any(|line| line.split_whitespace().eq(["THP_enabled:", "0"])), "/proc/self/status:\n{status}");
        }
    }

    #[test]
    fn purge_delay_index_is_mimallocs() {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "allocator_tests::purge_delay_read_from_the_environment"])
            .env("MIMALLOC_PURGE_DELAY", "4321")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success() && stdout.contains("1 passed"), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    }
}
