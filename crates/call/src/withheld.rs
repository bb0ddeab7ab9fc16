//! Why a capability is missing, said right: an install the operator granted a capability that
//! the operator's policy then forbids is refused "by policy", not "not granted", so the
//! operator knows which knob to turn.

use warden_manifest::Capability;

/// The capabilities an install requested and was granted but the policy's `capabilities`
/// forbids. Everything else that is missing was not requested or not granted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Withheld(u8);

impl Withheld {
    pub fn by_policy(capabilities: &[Capability]) -> Withheld {
        Withheld(capabilities.iter().fold(0, |bits, c| bits | bit(*c)))
    }

    pub fn contains(self, capability: Capability) -> bool {
        self.0 & bit(capability) != 0
    }

    /// Why `capability` is refused: "network access is not granted", or "... is not allowed by
    /// the operator's policy".
    pub fn reason(self, capability: Capability) -> String {
        let what = match capability {
            Capability::Network => "network access",
            Capability::Filesystem => "file system access",
            Capability::Kv => "key-value",
            Capability::Secrets => "secrets",
            Capability::Calls => "calls to other extensions",
            Capability::System => "system calls",
        };
        let is = if matches!(capability, Capability::Secrets | Capability::Calls) {
            "are"
        } else {
            "is"
        };
        if self.contains(capability) {
            format!("{what} {is} not allowed by the operator's policy")
        } else {
            format!("{what} {is} not granted")
        }
    }
}

fn bit(c: Capability) -> u8 {
    let i = Capability::ALL.iter().position(|x| *x == c).unwrap_or(0);
    1 << i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_refusals_say_so() {
        let w = Withheld::by_policy(&[Capability::Network, Capability::Calls]);
        assert_eq!(
            w.reason(Capability::Network),
            "network access is not allowed by the operator's policy"
        );
        assert_eq!(
            w.reason(Capability::Calls),
            "calls to other extensions are not allowed by the operator's policy"
        );
        assert_eq!(w.reason(Capability::Kv), "key-value is not granted");
        assert_eq!(
            Withheld::default().reason(Capability::Network),
            "network access is not granted"
        );
    }
}
