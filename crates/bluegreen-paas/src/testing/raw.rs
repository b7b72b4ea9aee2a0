//! [`RawClient`]: untyped requests through a [`PlatformClient`], for tests of the
//! client itself (pages, errors, rate limits) and of the emulator's schema checks.

use bluegreen_core::Result;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::PlatformClient;

/// Untyped Platform API requests through a [`PlatformClient`]: the same
/// authentication, pagination, rate-limit pause and error kinds as the typed
/// operations, on any path. For tests; a program uses the image, fleet and router.
#[derive(Clone, Debug)]
pub struct RawClient {
    client: PlatformClient,
}

impl RawClient {
    /// Raw requests through `client`.
    pub fn new(client: PlatformClient) -> Self {
        RawClient { client }
    }

    /// The client the requests go through.
    pub fn client(&self) -> &PlatformClient {
        &self.client
    }

    /// `GET path`, decoded; a missing resource is `NotFound`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.client.get(path).await
    }

    /// Every item of a list at `path`, following `Next-Range` across pages.
    pub async fn list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>> {
        self.client.list(path).await
    }

    /// `POST path` with a JSON body, decoded.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T> {
        self.client.post(path, body).await
    }

    /// `PATCH path` with a JSON body, decoded.
    pub async fn patch<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T> {
        self.client.patch(path, body).await
    }

    /// `DELETE path`; a missing resource is `NotFound`.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.client.delete(path).await
    }
}
