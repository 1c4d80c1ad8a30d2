//! Draining a listener over real sockets: once shutdown is requested the port refuses new
//! connections (none is accepted and left waiting), while a request in flight is answered.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vote_service::listen::{ListenLimits, ListenMetrics, Listener};
use vote_service::Shutdown;

#[tokio::test]
async fn a_draining_listener_refuses_new_connections_and_answers_requests_in_flight() {
    let (trigger, shutdown) = Shutdown::manual();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = Listener::from_tcp(tcp, ListenLimits::internal(), ListenMetrics::register(&prometheus::Registry::new(), "test"));
    let slow = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            "done"
        }),
    );
    let addr = vote_service::spawn_router(listener, slow, shutdown).unwrap();

    let mut in_flight = TcpStream::connect(addr).await.unwrap();
    in_flight.write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    trigger.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;

    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "a draining listener accepted a new connection");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), in_flight.read_to_string(&mut answer)).await.expect("answered within the drain").unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"), "{answer}");
}
