//! A small client of the RabbitMQ management HTTP API: the queues of this
//! deployment's namespace with their depth, consumers and rates.
//!
//! The management API is the only place these figures exist (AMQP's
//! passive declare gives ready messages and consumers, not unacked or
//! rates). Its figures are sampled by the broker every few seconds
//! (`collect_statistics_interval`, 5 s by default), so they trail reality.

use std::time::Duration;

use keel_messaging::AmqpSettings;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::admin::settings::AmqpManagementSettings;

/// Queues asked for per page (the API's maximum is 500).
const PAGE_SIZE: u32 = 500;
/// A namespace never has more queues than this many pages' worth; the
/// bound only keeps a misbehaving answer from looping.
const MAX_PAGES: u32 = 20;

/// Why the management API gave no figures.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    #[error("the RabbitMQ management API is unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    #[error("the RabbitMQ management API did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the RabbitMQ management API answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the RabbitMQ management API answered something unreadable: {0}")]
    Unreadable(#[source] reqwest::Error),
}

/// One queue's figures.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = Queue)]
pub struct QueueStats {
    pub name: String,
    /// `quorum`, `classic` or `stream`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Messages waiting for a consumer.
    pub ready: u64,
    /// Delivered, not yet acknowledged.
    pub unacked: u64,
    /// `ready + unacked`.
    pub messages: u64,
    pub consumers: u64,
    pub rates: Rates,
}

/// Messages per second, averaged by the broker over its last sample.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = QueueRates)]
pub struct Rates {
    pub publish: f64,
    pub deliver: f64,
    pub ack: f64,
}

/// The client (cheap to clone).
#[derive(Debug, Clone)]
pub struct Management {
    client: reqwest::Client,
    /// The base URL without credentials.
    base: url::Url,
    user: String,
    password: SecretString,
    vhost: String,
    namespace: String,
    timeout: Duration,
}

impl Management {
    /// The vhost is the one in `amqp.url` (its path; `/` when empty), so the
    /// queues listed are the ones this deployment uses.
    pub fn new(settings: &AmqpManagementSettings, amqp: &AmqpSettings) -> Result<Self, String> {
        let mut base = url::Url::parse(settings.url.expose_secret())
            .map_err(|_| "amqp_management.url is not a URL".to_owned())?;
        let user = match base.username() {
            "" => "guest".to_owned(),
            user => percent_decode(user),
        };
        let password = SecretString::from(percent_decode(base.password().unwrap_or("guest")));
        // Credentials travel as a Basic header, never inside a URL that an
        // error message could print.
        base.set_username("")
            .and_then(|()| base.set_password(None))
            .map_err(|()| "amqp_management.url cannot carry credentials".to_owned())?;
        let vhost =
            vhost_of(amqp.url.expose_secret()).ok_or_else(|| "amqp.url is not a URL".to_owned())?;
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // Requests carry the broker's credentials: never repeated to
            // wherever a redirect points (a 3xx is a failed answer).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the management API client: {e}"))?;
        Ok(Self {
            client,
            base,
            user,
            password,
            vhost,
            namespace: amqp.namespace.clone(),
            timeout: settings.timeout,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Every queue whose name starts with `{namespace}.`, by name.
    pub async fn queues(&self) -> Result<Vec<QueueStats>, ManagementError> {
        let mut queues = Vec::new();
        let mut page = 1;
        loop {
            let listed = self.page(page).await?;
            queues.extend(listed.items.into_iter().map(QueueStats::from));
            if page >= listed.page_count || page >= MAX_PAGES {
                break;
            }
            page += 1;
        }
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(queues)
    }

    async fn page(&self, page: u32) -> Result<ListedPage, ManagementError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ManagementError::Status(reqwest::StatusCode::BAD_REQUEST))?
            .pop_if_empty()
            .extend(["api", "queues", self.vhost.as_str()]);
        // Filtered by the broker: a shared broker may hold thousands of
        // other queues. Namespaces are `[A-Za-z0-9_-]+`: nothing to escape.
        url.query_pairs_mut()
            .append_pair("page", &page.to_string())
            .append_pair("page_size", &PAGE_SIZE.to_string())
            .append_pair("name", &format!("^{}\\.", self.namespace))
            .append_pair("use_regex", "true");
        let response = self
            .client
            .get(url)
            .basic_auth(&self.user, Some(self.password.expose_secret()))
            .send()
            .await
            .map_err(|e| self.classify(e))?;
        if !response.status().is_success() {
            return Err(ManagementError::Status(response.status()));
        }
        response.json().await.map_err(|e| {
            if e.is_timeout() {
                ManagementError::Timeout(self.timeout)
            } else {
                ManagementError::Unreadable(e)
            }
        })
    }

    fn classify(&self, error: reqwest::Error) -> ManagementError {
        if error.is_timeout() {
            ManagementError::Timeout(self.timeout)
        } else {
            ManagementError::Unreachable(error.without_url())
        }
    }
}

/// The vhost named by an AMQP URL's path (`/%2f` → `/`, `/shop` → `shop`,
/// none → `/`, RabbitMQ's default).
fn vhost_of(amqp_url: &str) -> Option<String> {
    let url = url::Url::parse(amqp_url).ok()?;
    let path = url.path().strip_prefix('/').unwrap_or(url.path());
    Some(if path.is_empty() {
        "/".to_owned()
    } else {
        percent_decode(path)
    })
}

fn percent_decode(value: &str) -> String {
    // `url` offers no decoder of its own; a byte-wise one suffices for
    // user names, passwords and vhost names.
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi * 16 + lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// `GET /api/queues/{vhost}?page=...`: only the fields read here.
#[derive(Debug, Deserialize)]
struct ListedPage {
    #[serde(default)]
    items: Vec<ListedQueue>,
    #[serde(default)]
    page_count: u32,
}

#[derive(Debug, Deserialize)]
struct ListedQueue {
    name: String,
    #[serde(rename = "type", default)]
    kind: String,
    // Absent until the broker's first statistics sample of the queue.
    #[serde(default)]
    messages: u64,
    #[serde(default)]
    messages_ready: u64,
    #[serde(default)]
    messages_unacknowledged: u64,
    #[serde(default)]
    consumers: u64,
    #[serde(default)]
    message_stats: MessageStats,
}

#[derive(Debug, Default, Deserialize)]
struct MessageStats {
    #[serde(default)]
    publish_details: Rate,
    /// Deliveries to consumers plus basic.get.
    #[serde(default)]
    deliver_get_details: Rate,
    #[serde(default)]
    ack_details: Rate,
}

#[derive(Debug, Default, Deserialize)]
struct Rate {
    #[serde(default)]
    rate: f64,
}

impl From<ListedQueue> for QueueStats {
    fn from(queue: ListedQueue) -> Self {
        Self {
            name: queue.name,
            kind: queue.kind,
            ready: queue.messages_ready,
            unacked: queue.messages_unacknowledged,
            messages: queue.messages,
            consumers: queue.consumers,
            rates: Rates {
                publish: queue.message_stats.publish_details.rate,
                deliver: queue.message_stats.deliver_get_details.rate,
                ack: queue.message_stats.ack_details.rate,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_vhost_comes_from_the_amqp_url() {
        assert_eq!(vhost_of("amqp://g:g@h:5672/%2f").unwrap(), "/");
        assert_eq!(vhost_of("amqp://g:g@h:5672/%2F").unwrap(), "/");
        assert_eq!(vhost_of("amqp://g:g@h:5672").unwrap(), "/");
        assert_eq!(vhost_of("amqp://g:g@h:5672/shop").unwrap(), "shop");
    }

    /// A server writing `answer` to every connection; its URL (with
    /// `credentials@` when given) and how many connections it took.
    async fn serve(
        answer: String,
        credentials: &str,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{credentials}{}", listener.local_addr().unwrap());
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        (url, hits)
    }

    #[tokio::test]
    async fn a_redirect_from_the_management_api_is_a_failure_not_followed_with_the_credentials() {
        let body = r#"{"items":[],"page_count":1}"#;
        let (elsewhere, elsewhere_hits) = serve(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
            "",
        )
        .await;
        let (management_url, management_hits) = serve(
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {elsewhere}/api/queues/%2F\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
            "monitor:s3cret@",
        )
        .await;
        let amqp = crate::settings::Settings::defaults().unwrap().amqp;
        let management = Management::new(
            &AmqpManagementSettings {
                url: SecretString::from(management_url),
                timeout: Duration::from_secs(3),
            },
            &amqp,
        )
        .unwrap();

        let answer = management.queues().await;
        assert!(
            matches!(answer, Err(ManagementError::Status(status)) if status.as_u16() == 307),
            "{answer:?}"
        );
        assert_eq!(management_hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(
            elsewhere_hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the redirect was followed"
        );
    }

    #[test]
    fn a_listed_queue_reads_missing_statistics_as_zero() {
        let listed: ListedPage = serde_json::from_value(serde_json::json!({
            "items": [
                {"name": "keel.dead", "type": "quorum"},
                {"name": "keel.jobs.webhook", "type": "quorum", "messages": 5,
                 "messages_ready": 3, "messages_unacknowledged": 2, "consumers": 1,
                 "message_stats": {"publish_details": {"rate": 1.5},
                                   "deliver_get_details": {"rate": 2.0},
                                   "ack_details": {"rate": 0.5}}}
            ],
            "page_count": 1
        }))
        .unwrap();
        let queues: Vec<QueueStats> = listed.items.into_iter().map(QueueStats::from).collect();
        assert_eq!(queues[0].ready, 0);
        assert_eq!(queues[0].rates.publish, 0.0);
        assert_eq!(
            (queues[1].ready, queues[1].unacked, queues[1].messages),
            (3, 2, 5)
        );
        assert_eq!(queues[1].rates.deliver, 2.0);
    }
}
