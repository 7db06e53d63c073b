//! Pieces every framework's command line shares: an HTTP client of the daemon's API that
//! reads every answer as JSON, and the aligned tables and pretty JSON the commands print. How
//! an API error reads (its body's shape) and the exit codes stay with each framework.

use std::time::Duration;

use serde_json::Value;

/// How long one request to the daemon may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request to the daemon got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP client could not be built (no TLS backend, bad system configuration).
    #[error("building the HTTP client")]
    Build(#[source] reqwest::Error),
    /// The daemon could not be reached, or did not answer in time.
    #[error("cannot reach {daemon} at {base}")]
    Unreachable {
        /// The daemon's name, e.g. `svcframework`.
        daemon: String,
        /// The API's base URL.
        base: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The answer's body could not be read.
    #[error("reading the response")]
    Read(#[source] reqwest::Error),
}

/// A daemon's answer: its status and its body as JSON (a body that is not JSON as a string,
/// an empty one as `null`).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiAnswer {
    /// The HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl ApiAnswer {
    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A client of one daemon's API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    daemon: String,
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the daemon called `daemon` (named in errors) at `base`, e.g.
    /// `http://127.0.0.1:8090` (a trailing `/` is ignored).
    pub fn new(daemon: &str, base: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(ClientError::Build)?;
        Ok(ApiClient {
            daemon: daemon.to_owned(),
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// The API's base URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request for `path` (starting with `/`) under the base URL, to send with
    /// [`ApiClient::send`].
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Sends `request` and reads the answer, whatever its status.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<ApiAnswer, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                daemon: self.daemon.clone(),
                base: self.base.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(ClientError::Read)?;
        Ok(ApiAnswer {
            status,
            body: json_or_text(text),
        })
    }
}

/// A body as JSON; text that is not JSON as a string, an empty body as `null`.
fn json_or_text(text: String) -> Value {
    if text.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// `rows` as aligned columns, two spaces apart, one line each (trailing spaces trimmed);
/// the first row is usually the header.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(column, cell)| format!("{cell:<width$}", width = widths[column]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The items of the array `value[key]`; none when it is missing or not an array.
pub fn items<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// `value` as indented JSON, for `--output json`.
pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|cell| (*cell).to_owned()).collect()
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let rows = [
            row(&["ID", "STATE"]),
            row(&["/web", "running"]),
            row(&["/a-longer-name", "-"]),
        ];
        assert_eq!(
            table(&rows),
            "ID              STATE\n/web            running\n/a-longer-name  -\n"
        );
    }

    #[test]
    fn ragged_rows_and_wide_characters_are_aligned_by_characters() {
        let rows = [row(&["ä", "b", "c"]), row(&["dd"])];
        assert_eq!(table(&rows), "ä   b  c\ndd\n");
        assert_eq!(table(&[]), "");
    }

    #[test]
    fn items_of_a_missing_or_other_field_are_none() {
        let value = serde_json::json!({"list": [1, 2], "text": "x"});
        assert_eq!(items(&value, "list").count(), 2);
        assert_eq!(items(&value, "text").count(), 0);
        assert_eq!(items(&value, "missing").count(), 0);
    }

    #[test]
    fn a_body_is_json_text_or_null() {
        assert_eq!(
            json_or_text("{\"a\":1}".into()),
            serde_json::json!({"a": 1})
        );
        assert_eq!(
            json_or_text("not json".into()),
            Value::String("not json".into())
        );
        assert_eq!(json_or_text(" \n".into()), Value::Null);
    }

    #[tokio::test]
    async fn an_unreachable_daemon_is_named_with_its_url() {
        // A port that was just free: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let client =
            ApiClient::new("testframework", &format!("http://{address}/")).expect("client");
        assert_eq!(client.base(), format!("http://{address}"));
        let error = client
            .send(client.request(reqwest::Method::GET, "/ping"))
            .await
            .expect_err("nothing listens");
        assert_eq!(
            error.to_string(),
            format!("cannot reach testframework at http://{address}")
        );
    }
}
