//! The protocol's tests: `protocol` drives fake programs written in Rust over in-memory pipes;
//! `programs` runs REAL programs built here from `ext.c` (`cc -static`), each hostile one once
//! directly and once inside `warden_sandbox`, and checks the next call (a fresh process) works.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod programs;
mod protocol;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use warden_process::{HostApi, HostError, KvKey, KvList, KvPage, KvSet, Log};

/// An in-memory host: kv in one map, logs in a list; everything else denied (the defaults).
#[derive(Default)]
pub struct TestHost {
    pub kv: Mutex<BTreeMap<(String, String), Vec<u8>>>,
    pub logs: Mutex<Vec<String>>,
    pub counts: Mutex<HashMap<&'static str, u32>>,
}

impl TestHost {
    fn count(&self, what: &'static str) {
        *self.counts.lock().unwrap().entry(what).or_default() += 1;
    }
}

#[async_trait]
impl HostApi for TestHost {
    async fn log(&self, req: Log) -> Result<(), HostError> {
        self.count("log");
        self.logs.lock().unwrap().push(req.message);
        Ok(())
    }
    async fn kv_get(&self, req: KvKey) -> Result<Option<Vec<u8>>, HostError> {
        self.count("kv.get");
        Ok(self.kv.lock().unwrap().get(&(req.bucket, req.key)).cloned())
    }
    async fn kv_set(&self, req: KvSet) -> Result<(), HostError> {
        self.count("kv.set");
        if req.bucket != "b" {
            return Err(HostError::denied(format!(
                "bucket {:?} is not granted",
                req.bucket
            )));
        }
        self.kv
            .lock()
            .unwrap()
            .insert((req.bucket, req.key), req.value);
        Ok(())
    }
    async fn kv_delete(&self, req: KvKey) -> Result<(), HostError> {
        self.kv.lock().unwrap().remove(&(req.bucket, req.key));
        Ok(())
    }
    async fn kv_list(&self, req: KvList) -> Result<KvPage, HostError> {
        let keys = self
            .kv
            .lock()
            .unwrap()
            .keys()
            .filter(|(b, _)| *b == req.bucket)
            .map(|(_, k)| k.clone())
            .collect();
        Ok(KvPage { keys, cursor: None })
    }
}
