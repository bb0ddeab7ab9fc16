//! Host requests: what a program may ask of the host while a call runs, parsed into typed
//! params, and the [`HostApi`] trait the host implements with its capability checks.
//!
//! | method | params | result |
//! |---|---|---|
//! | `log` | `{"level": "info", "message": "..", "context"?: ".."}` | `null` |
//! | `kv.get` | `{"bucket": "b", "key": "k"}` | `{"value": base64 \| null}` |
//! | `kv.set` | `{"bucket": "b", "key": "k", "value": base64}` | `null` |
//! | `kv.delete` | `{"bucket": "b", "key": "k"}` | `null` |
//! | `kv.increment` | `{"bucket": "b", "key": "k", "delta": n}` | `{"value": n}` (atomic; a missing key counts from 0) |
//! | `kv.list` | `{"bucket": "b", "cursor"?: n}` | `{"keys": [".."], "cursor": n \| null}` |
//! | `secrets.get` | `{"name": "n"}` | `{"value": ".." \| null}` |
//! | `http.fetch` | `{"method": "GET", "url": "..", "headers"?: [["name", "value"]], "body"?: base64}` | `{"status": 200, "headers": [["name", "value"]], "body": base64}` |
//! | `invoke` | `{"extension": "id", "method": "m", "input": base64}` | `{"output": base64}` |
//!
//! Params are an object (omitted = `{}`); an unknown field, a missing one, a wrong type or
//! bad base64 is `-32602` (`invalid-params`) and the call goes on; an unknown method is
//! `-32601` (`method-not-found`). A method the host does not implement is `denied`: every
//! default method of [`HostApi`] refuses (fail closed).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::message::{HostError, b64, cut};

/// The host requests a program may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostMethod {
    Log,
    KvGet,
    KvSet,
    KvDelete,
    KvIncrement,
    KvList,
    SecretsGet,
    HttpFetch,
    Invoke,
}

impl HostMethod {
    pub const ALL: [HostMethod; 9] = [
        HostMethod::Log,
        HostMethod::KvGet,
        HostMethod::KvSet,
        HostMethod::KvDelete,
        HostMethod::KvIncrement,
        HostMethod::KvList,
        HostMethod::SecretsGet,
        HostMethod::HttpFetch,
        HostMethod::Invoke,
    ];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HostMethod::Log => "log",
            HostMethod::KvGet => "kv.get",
            HostMethod::KvSet => "kv.set",
            HostMethod::KvDelete => "kv.delete",
            HostMethod::KvIncrement => "kv.increment",
            HostMethod::KvList => "kv.list",
            HostMethod::SecretsGet => "secrets.get",
            HostMethod::HttpFetch => "http.fetch",
            HostMethod::Invoke => "invoke",
        }
    }

    fn parse(s: &str) -> Option<HostMethod> {
        HostMethod::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

/// `log`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub level: LogLevel,
    #[serde(default)]
    pub context: String,
    pub message: String,
}

/// `kv.get`, `kv.delete`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvKey {
    pub bucket: String,
    pub key: String,
}

/// `kv.set`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvSet {
    pub bucket: String,
    pub key: String,
    #[serde(with = "b64")]
    pub value: Vec<u8>,
}

/// `kv.increment`: adds `delta` to the unsigned decimal number stored at `key` (absent = 0)
/// in one atomic step, and answers the new value.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvIncrement {
    pub bucket: String,
    pub key: String,
    pub delta: u64,
}

/// `kv.list`: one page of keys after `cursor` (`None`: from the start); the host picks the
/// page size.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvList {
    pub bucket: String,
    #[serde(default)]
    pub cursor: Option<u64>,
}

/// The answer to `kv.list`: `cursor` is `Some` when more may follow.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
pub struct KvPage {
    pub keys: Vec<String>,
    pub cursor: Option<u64>,
}

/// `secrets.get`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretGet {
    pub name: String,
}

/// `http.fetch`. Nothing here is checked: the host's egress policy is.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fetch {
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default, with = "b64::option")]
    pub body: Option<Vec<u8>>,
}

/// The answer to `http.fetch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FetchResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    #[serde(with = "b64")]
    pub body: Vec<u8>,
}

/// `invoke`: call another extension.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invoke {
    pub extension: String,
    pub method: String,
    #[serde(with = "b64")]
    pub input: Vec<u8>,
}

fn not_available(m: HostMethod) -> HostError {
    HostError::denied(format!("{} is not available", m.as_str()))
}

/// What the host does for a program's requests. Implemented by the host over the same
/// capability checks, ledger and redaction as components; the tenant and extension come from
/// the host's own state, never from params.
///
/// Every method defaults to `denied`. The futures are dropped at the call's deadline, so they
/// must tolerate cancellation (as a tokio task does).
#[async_trait]
pub trait HostApi: Send + Sync {
    async fn log(&self, req: Log) -> Result<(), HostError> {
        let _ = req;
        Err(not_available(HostMethod::Log))
    }
    async fn kv_get(&self, req: KvKey) -> Result<Option<Vec<u8>>, HostError> {
        let _ = req;
        Err(not_available(HostMethod::KvGet))
    }
    async fn kv_set(&self, req: KvSet) -> Result<(), HostError> {
        let _ = req;
        Err(not_available(HostMethod::KvSet))
    }
    async fn kv_delete(&self, req: KvKey) -> Result<(), HostError> {
        let _ = req;
        Err(not_available(HostMethod::KvDelete))
    }
    async fn kv_increment(&self, req: KvIncrement) -> Result<u64, HostError> {
        let _ = req;
        Err(not_available(HostMethod::KvIncrement))
    }
    async fn kv_list(&self, req: KvList) -> Result<KvPage, HostError> {
        let _ = req;
        Err(not_available(HostMethod::KvList))
    }
    async fn secrets_get(&self, req: SecretGet) -> Result<Option<String>, HostError> {
        let _ = req;
        Err(not_available(HostMethod::SecretsGet))
    }
    async fn http_fetch(&self, req: Fetch) -> Result<FetchResponse, HostError> {
        let _ = req;
        Err(not_available(HostMethod::HttpFetch))
    }
    async fn invoke(&self, req: Invoke) -> Result<Vec<u8>, HostError> {
        let _ = req;
        Err(not_available(HostMethod::Invoke))
    }
}

/// A [`HostApi`] that refuses everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct DenyAll;

impl HostApi for DenyAll {}

fn params<T: serde::de::DeserializeOwned>(p: Option<&RawValue>) -> Result<T, HostError> {
    let text = p.map_or("{}", RawValue::get);
    if !text.starts_with('{') {
        return Err(HostError::invalid_params("params must be an object"));
    }
    serde_json::from_str(text).map_err(|e| HostError::invalid_params(cut(&e.to_string())))
}

#[derive(Serialize)]
struct Output<'a> {
    #[serde(serialize_with = "b64::serialize")]
    output: &'a [u8],
}

fn json<T: Serialize>(v: &T) -> Result<serde_json::Value, HostError> {
    serde_json::to_value(v).map_err(|e| HostError::failed(format!("encoding the answer: {e}")))
}

/// Parses `params` for `method` and runs it on `host` (a remote extension's callbacks use it
/// too: the same requests, over HTTPS).
pub async fn dispatch(
    host: &dyn HostApi,
    method: &str,
    p: Option<&RawValue>,
) -> Result<serde_json::Value, HostError> {
    let Some(m) = HostMethod::parse(method) else {
        return Err(HostError::method_not_found(method));
    };
    use serde_json::Value;
    match m {
        HostMethod::Log => host.log(params(p)?).await.map(|()| Value::Null),
        HostMethod::KvGet => {
            let v = host.kv_get(params(p)?).await?;
            Ok(serde_json::json!({ "value": v.as_deref().map(b64::encode) }))
        }
        HostMethod::KvSet => host.kv_set(params(p)?).await.map(|()| Value::Null),
        HostMethod::KvDelete => host.kv_delete(params(p)?).await.map(|()| Value::Null),
        HostMethod::KvIncrement => {
            let v = host.kv_increment(params(p)?).await?;
            Ok(serde_json::json!({ "value": v }))
        }
        HostMethod::KvList => json(&host.kv_list(params(p)?).await?),
        HostMethod::SecretsGet => {
            let v = host.secrets_get(params(p)?).await?;
            Ok(serde_json::json!({ "value": v }))
        }
        HostMethod::HttpFetch => json(&host.http_fetch(params(p)?).await?),
        HostMethod::Invoke => {
            let out = host.invoke(params(p)?).await?;
            json(&Output { output: &out })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn run(
        host: &dyn HostApi,
        method: &str,
        p: Option<&str>,
    ) -> Result<serde_json::Value, HostError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let p = p.map(raw);
        rt.block_on(dispatch(host, method, p.as_deref()))
    }

    struct Kv;
    #[async_trait]
    impl HostApi for Kv {
        async fn kv_get(&self, req: KvKey) -> Result<Option<Vec<u8>>, HostError> {
            Ok((req.key == "k").then(|| vec![0, 255]))
        }
    }

    #[test]
    fn unknown_methods_and_bad_params() {
        let e = run(&Kv, "kv.scan", None).unwrap_err();
        assert_eq!((e.code(), e.name().as_str()), (-32601, "method-not-found"));
        assert_eq!(e.message(), "no host method \"kv.scan\"");
        for bad in [
            r#"["b","k"]"#,
            r#"{"bucket":"b"}"#,
            r#"{"bucket":"b","key":1}"#,
            r#"{"bucket":"b","key":"k","extra":1}"#,
            r#"{"bucket":"b","key":"k","key":"j"}"#,
        ] {
            let e = run(&Kv, "kv.get", Some(bad)).unwrap_err();
            assert_eq!(
                (e.code(), e.name().as_str()),
                (-32602, "invalid-params"),
                "{bad}"
            );
        }
        let e = run(
            &Kv,
            "kv.set",
            Some(r#"{"bucket":"b","key":"k","value":"%%"}"#),
        )
        .unwrap_err();
        assert_eq!(e.code(), -32602);
        assert!(e.message().contains("not base64"), "{}", e.message());
    }

    #[test]
    fn typed_answers() {
        assert_eq!(
            run(&Kv, "kv.get", Some(r#"{"bucket":"b","key":"k"}"#)).unwrap(),
            serde_json::json!({"value": "AP8="})
        );
        assert_eq!(
            run(&Kv, "kv.get", Some(r#"{"bucket":"b","key":"x"}"#)).unwrap(),
            serde_json::json!({"value": null})
        );
    }

    #[test]
    fn defaults_deny() {
        for m in HostMethod::ALL {
            let p = match m {
                HostMethod::Log => r#"{"level":"info","message":"m"}"#,
                HostMethod::KvGet | HostMethod::KvDelete => r#"{"bucket":"b","key":"k"}"#,
                HostMethod::KvSet => r#"{"bucket":"b","key":"k","value":""}"#,
                HostMethod::KvIncrement => r#"{"bucket":"b","key":"k","delta":1}"#,
                HostMethod::KvList => r#"{"bucket":"b"}"#,
                HostMethod::SecretsGet => r#"{"name":"n"}"#,
                HostMethod::HttpFetch => r#"{"method":"GET","url":"https://example.com/"}"#,
                HostMethod::Invoke => r#"{"extension":"e","method":"m","input":""}"#,
            };
            let e = run(&DenyAll, m.as_str(), Some(p)).unwrap_err();
            assert_eq!((e.code(), e.name().as_str()), (-32000, "denied"), "{m:?}");
        }
    }
}
