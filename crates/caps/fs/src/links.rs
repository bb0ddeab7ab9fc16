//! Symlinks a guest may create inside a mount.
//!
//! Wasmtime (cap-std) never follows a link out of a preopened folder, and refuses absolute
//! targets. But a relative target that climbs out (`../../../etc`) can still be *created*, and
//! it is then on the host's disk inside `DATA/`, where backups, `rsync -L`, `chown -R`, an
//! operator's shell or a process extension mounting the same folder would follow it. So a link
//! is allowed only if its target, resolved lexically from the link's own folder, stays inside.

/// Why a symlink is refused, or `None` if it may be created: its target must be relative and
/// never climb (`..`), so it can only name something below the link's own folder, wherever
/// that folder is.
///
/// A check of the target's text against the link's position would not be sound: the position
/// changes when the link or a folder above it is renamed or hard-linked, and a `..` after a
/// component that is itself a link (`p -> .`, then `p/p/../..`) climbs further than the text
/// shows. A target without `..` stays inside in every case, since every link it passes through
/// obeys the same rule (links planted by the host are the host's business). The cost: a guest
/// cannot make a link to a sibling folder (`../other`); it links from a common parent instead.
pub fn symlink_refusal(_link: &str, target: &str) -> Option<&'static str> {
    if target.is_empty() {
        return Some("the link's target is empty");
    }
    if target.starts_with('/') {
        return Some("the link's target is absolute");
    }
    if target.split('/').any(|part| part == "..") {
        return Some("the link's target climbs with `..` and may leave the mount");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_that_climb_are_refused() {
        for (link, target) in [
            ("l", ".."),
            ("l", "../x"),
            ("l", "../../../../tmp/x"),
            ("a/l", "../../x"),
            ("a/b/l", "../../../x"),
            ("a/l", "x/../../../y"),
            ("l", "./../x"),
            // Inside from where they are made, outside once renamed or passed through a link.
            ("a/l", "../x"),
            ("a/b/l", "../../x"),
            ("l", "d/../x"),
            ("l", "p/p/p/../../../../etc/passwd"),
            ("l", "p/.."),
            ("l", "/etc/passwd"),
            ("l", ""),
        ] {
            assert!(
                symlink_refusal(link, target).is_some(),
                "{link} -> {target} must be refused"
            );
        }
    }

    #[test]
    fn targets_that_only_descend_are_allowed() {
        for (link, target) in [
            ("l", "x"),
            ("l", "."),
            ("l", "./d/x"),
            ("a/l", "b/c"),
            ("a//b/./l", "c//d"),
            ("l", "x/"),
            ("l", "..x/y.."),
        ] {
            assert_eq!(symlink_refusal(link, target), None, "{link} -> {target}");
        }
    }
}
