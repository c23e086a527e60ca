//! corral-harness: `corral bench` and `corral chaos`. Both drive a real `corral serve` (the
//! `corral` binary itself, started in a temp data dir, see [`served`]) through corral-client
//! only: the harness measures and breaks the server from the outside, as users reach it, and
//! nothing in the server or the client depends on it.

pub mod bench;
pub mod chaos;
mod figure;
pub mod machine;
pub mod sequential;
pub mod served;

use corral_client::Client;
use serde_json::Value;

/// Raw JSON calls for the harness, which pokes the API the way any HTTP client could (the CLI
/// uses the typed calls of corral-client instead).
pub trait JsonCalls {
    /// A request with a JSON body; the 2xx answer as JSON, else the server's error.
    fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> impl std::future::Future<Output = anyhow::Result<Value>> + Send;
}

impl JsonCalls for Client {
    async fn json(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let method = hyper::Method::from_bytes(method.as_bytes())?;
        Ok(self.call(method, path, body).await?)
    }
}
