//! MCP over stdio: one client, the agent fixed when the server started.

use crate::{Principal, WardenMcp};
use anyhow::Result;
use rmcp::ServiceExt as _;
use std::sync::Arc;
use warden::runtime::Runtime;

/// Serves `principal`'s tools on stdin and stdout until the client closes its input; what
/// it started finishes and is recorded before this returns.
pub async fn serve(runtime: Arc<Runtime>, principal: Principal) -> Result<()> {
    let handler = WardenMcp::new(runtime, Some(principal));
    let (stdin, stdout) = rmcp::transport::stdio();
    let input = UntilClosed {
        inner: stdin,
        handler: handler.clone(),
    };
    let server = handler.clone().serve((input, stdout)).await?;
    server.waiting().await?;
    // The client is gone; what it started finishes and is recorded before the process ends.
    handler.drain().await;
    Ok(())
}

/// The server's input, telling the handler when the client closed it.
struct UntilClosed<R> {
    inner: R,
    handler: WardenMcp,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for UntilClosed<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        // A read that adds nothing to a buffer with room is the end of the input.
        if let std::task::Poll::Ready(Ok(())) = &polled
            && buf.filled().len() == before
            && buf.remaining() > 0
        {
            self.handler.client_gone();
        }
        polled
    }
}
