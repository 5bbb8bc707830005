//! The HTTP-01 responder: `GET /.well-known/acme-challenge/<token>` answers the key
//! authorization of a challenge in progress, 404 for anything else. It holds no secret (the
//! key authorization is what the CA publishes to whoever asks), so it serves plain HTTP.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

use super::issue::Challenges;

async fn answer(State(ch): State<Challenges>, Path(token): Path<String>) -> (StatusCode, String) {
    let found = ch
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&token)
        .cloned();
    match found {
        Some(k) => {
            // Once per name and renewal: worth a line when validation fails elsewhere.
            tracing::info!(%token, "ACME http-01 token served");
            (StatusCode::OK, k)
        }
        None => (StatusCode::NOT_FOUND, String::new()),
    }
}

/// Binds `listen` and serves the challenges for the life of the process; returns the
/// address bound (port 0 picks one).
pub async fn start(listen: SocketAddr, challenges: Challenges) -> Result<SocketAddr> {
    let l = TcpListener::bind(listen).await.map_err(|e| {
        let hint = crate::transport::bind_hint(listen, &e);
        anyhow::Error::new(e).context(format!("ACME http-01 responder: binding {listen}{hint}"))
    })?;
    let local = l.local_addr().context("http-01 responder address")?;
    let app = axum::Router::new()
        .route("/.well-known/acme-challenge/{token}", get(answer))
        .with_state(challenges);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(l, app).await {
            tracing::error!(error = %e, "ACME http-01 responder stopped");
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_the_key_authorization_of_a_known_token_only() {
        let ch = Challenges::default();
        ch.write().unwrap().insert("tok".into(), "tok.thumb".into());
        let addr = start("127.0.0.1:0".parse().unwrap(), ch).await.unwrap();
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/.well-known/acme-challenge/tok").await;
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("tok.thumb"),
            "{ok}"
        );
        let missing = get("/.well-known/acme-challenge/other").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    }
}
