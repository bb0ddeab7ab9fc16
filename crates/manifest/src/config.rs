//! The operator config file (`--config FILE`): `[policy]` (what extensions may do) and
//! `[storage]` (where the runner keeps its state). Unknown sections and keys are errors.

use crate::policy::{Policy, parse_policy};
use crate::storage::{self, Storage};
use crate::strict::{Document, TomlError};

/// The whole operator config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub policy: Policy,
    pub storage: Storage,
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, TomlError> {
        let doc = Document::parse(text)?;
        let root = doc.root();
        let policy = match root.get("policy") {
            Some(v) => parse_policy(&v.as_table()?)?,
            None => Policy::default(),
        };
        let storage = match root.get("storage") {
            Some(v) => storage::parse(&v.as_table()?)?,
            None => Storage::Embedded,
        };
        root.finish()?;
        Ok(Config { policy, storage })
    }
}
