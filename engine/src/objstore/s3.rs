//! Any S3-compatible service (AWS, MinIO, Garage, Ceph, …) through aws-sdk-s3 with
//! a custom endpoint and path-style addressing. The SDK's own retries are off: the
//! uploader retries with its own backoff so every failure shows in logs and metrics.

use super::ObjectStoreError;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use bytes::Bytes;
use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    pub bucket: String,
    /// Prepended to every key (`prefix/raw/…`); may be empty.
    pub prefix: String,
    /// e.g. `http://127.0.0.1:9000`; empty means AWS's own endpoint for the region.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub path_style: bool,
}

#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    settings: S3Settings,
}

impl S3Store {
    pub fn new(settings: S3Settings) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(if settings.region.is_empty() {
                "us-east-1".to_owned()
            } else {
                settings.region.clone()
            }))
            .credentials_provider(Credentials::new(
                settings.access_key_id.clone(),
                settings.secret_access_key.clone(),
                None,
                None,
                "ooni-engine-config",
            ))
            .force_path_style(settings.path_style)
            .http_client(http)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_timeout(Duration::from_secs(300))
                    .build(),
            )
            // Plain checksums only where S3 requires them: older S3-compatible
            // servers do not all understand the newer trailing-checksum encoding.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if !settings.endpoint.is_empty() {
            conf = conf.endpoint_url(settings.endpoint.clone());
        }
        S3Store {
            client: aws_sdk_s3::Client::from_conf(conf.build()),
            settings,
        }
    }

    pub fn describe(&self) -> String {
        let s = &self.settings;
        let endpoint = if s.endpoint.is_empty() {
            "AWS"
        } else {
            &s.endpoint
        };
        format!("s3://{}/{} at {endpoint}", s.bucket, s.prefix)
    }

    fn full_key(&self, key: &str) -> String {
        if self.settings.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.settings.prefix.trim_end_matches('/'))
        }
    }

    fn err<E: std::error::Error>(op: &'static str, key: &str, e: E) -> ObjectStoreError {
        ObjectStoreError::S3 {
            op,
            key: key.to_owned(),
            message: DisplayErrorContext(e).to_string(),
        }
    }

    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectStoreError> {
        self.client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(self.full_key(key))
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| Self::err("PUT", key, e))?;
        Ok(())
    }

    pub async fn get(
        &self,
        key: &str,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, ObjectStoreError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                let missing = e.as_service_error().is_some_and(|s| s.is_no_such_key())
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404);
                return if missing {
                    Ok(None)
                } else {
                    Err(Self::err("GET", key, e))
                };
            }
        };
        let size = out.content_length().unwrap_or(0).max(0) as u64;
        if size > max_bytes as u64 {
            return Err(ObjectStoreError::TooLarge {
                key: key.to_owned(),
                size,
                max: max_bytes,
            });
        }
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| Self::err("GET body", key, e))?;
        Ok(Some(body.into_bytes()))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectStoreError> {
        let full = self.full_key(prefix);
        let strip = full.len() - prefix.len();
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.settings.bucket)
                .prefix(&full)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| Self::err("LIST", prefix, e))?;
            for o in out.contents() {
                if let Some(k) = o.key() {
                    if k.len() >= strip {
                        keys.push(k[strip..].to_owned());
                    }
                }
            }
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(keys)
    }

    pub async fn ping(&self) -> Result<(), ObjectStoreError> {
        self.client
            .head_bucket()
            .bucket(&self.settings.bucket)
            .send()
            .await
            .map_err(|e| Self::err("HEAD bucket", "", e))?;
        Ok(())
    }
}
