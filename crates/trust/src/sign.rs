//! Signing a bundle: a statement from its manifest and content hash, in a DSSE envelope.

use std::time::SystemTime;

use crate::Bundle;
use crate::dsse::{Envelope, MAX_SIGNATURES};
use crate::keys::{KeyId, SigningKey};
use crate::statement::{Statement, StatementError};
use crate::verify::{Subject, VerifyError, check_binding};

/// Why signing was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the existing signature file's statement is invalid")]
    ExistingStatement(#[source] StatementError),
    /// The existing envelope is about another bundle; adding a signature would be wrong and
    /// replacing it is the caller's decision.
    #[error("the existing signature file is for a different bundle")]
    DifferentBundle(#[source] VerifyError),
    #[error("the existing signature file already has {MAX_SIGNATURES} signatures, the maximum")]
    TooManySignatures,
    #[error(
        "the existing signature file's signatures[{index}] claims key {key_id} (this key) but is not a valid signature by it"
    )]
    InvalidExistingSignature { index: usize, key_id: KeyId },
}

/// Signs `bundle` with `key`.
///
/// Without `existing`, returns a new envelope over a fresh statement (signed now). With
/// `existing`, whose statement must bind the same publisher, id, version and content hash,
/// returns it with one more signature over the very same payload; if `key` already signed it,
/// returns it unchanged (check with [`Envelope::is_signed_by`] first to tell the user).
pub fn sign(
    bundle: &Bundle,
    key: &SigningKey,
    existing: Option<Envelope>,
) -> Result<Envelope, SignError> {
    sign_subject(&Subject::of(bundle), key, existing, SystemTime::now())
}

pub(crate) fn sign_subject(
    subject: &Subject<'_>,
    key: &SigningKey,
    existing: Option<Envelope>,
    now: SystemTime,
) -> Result<Envelope, SignError> {
    let Some(mut envelope) = existing else {
        let statement = Statement::new(
            subject.id.clone(),
            subject.version.clone(),
            subject.publisher.clone(),
            subject.content_hash,
            now,
        );
        return Ok(Envelope::new_signed(&statement, key));
    };
    let statement = envelope.statement().map_err(SignError::ExistingStatement)?;
    check_binding(&statement, subject).map_err(SignError::DifferentBundle)?;
    let public = key.public_key();
    if envelope.is_signed_by(&public) {
        return Ok(envelope);
    }
    let ours = public.key_id();
    if let Some(index) = envelope
        .signatures()
        .iter()
        .position(|s| s.keyid() == &ours)
    {
        return Err(SignError::InvalidExistingSignature {
            index,
            key_id: ours,
        });
    }
    if envelope.signatures().len() >= MAX_SIGNATURES {
        return Err(SignError::TooManySignatures);
    }
    envelope.push_signature(key);
    Ok(envelope)
}
