//! A minimal upstream for `scripts/bench-proxy`: answers `/health` and every other
//! path with a short fixed body, over HTTP/1.1 keep-alive.
//!
//! `cargo run --release -p bluegreen-proxy --example bench_upstream -- 127.0.0.1:9001 [name]`

use std::convert::Infallible;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9001".into());
    let name = args.next().unwrap_or_else(|| "upstream".into());
    let body = Bytes::from(format!("hello from {name}\n"));
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("bench_upstream {name} listening on {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
