//! Symlinks a guest may create inside a mount.
//!
//! Wasmtime (cap-std) never follows a link out of a preopened folder, and refuses absolute
//! targets. But a relative target that climbs out (`../../../etc`) can still be *created*, and
//! it is then on the host's disk inside `DATA/`, where backups, `rsync -L`, `chown -R`, an
//! operator's shell or a process extension mounting the same folder would follow it. So a link
//! is allowed only if its target, resolved lexically from the link's own folder, stays inside.

/// Why a symlink is refused, or `None` if it may be created. `link` is the link's path as the
/// guest gave it, relative to the folder descriptor it is created in; `target` is its target.
///
/// The descriptor's own depth below the mount's root is not known here, so it is taken as the
/// root: a link that would stay inside only because the descriptor is deeper is refused too
/// (fail closed; a guest can create such a link from the mount's root instead).
pub fn symlink_refusal(link: &str, target: &str) -> Option<&'static str> {
    if target.is_empty() {
        return Some("the link's target is empty");
    }
    if target.starts_with('/') {
        return Some("the link's target is absolute");
    }
    let parts: Vec<&str> = link.split('/').collect();
    let folder = &parts[..parts.len().saturating_sub(1)];
    let mut depth: usize = 0;
    for part in folder
        .iter()
        .chain(target.split('/').collect::<Vec<_>>().iter())
    {
        match *part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return Some("the link's target leaves the mount"),
            },
            _ => depth += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_that_climb_out_are_refused() {
        for (link, target) in [
            ("l", ".."),
            ("l", "../x"),
            ("l", "../../../../tmp/x"),
            ("a/l", "../../x"),
            ("a/b/l", "../../../x"),
            ("a/l", "x/../../../y"),
            ("l", "./../x"),
            ("../l", "x"),
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
    fn targets_that_stay_inside_are_allowed() {
        for (link, target) in [
            ("l", "x"),
            ("l", "."),
            ("l", "d/../x"),
            ("a/l", ".."),
            ("a/l", "../x"),
            ("a/b/l", "../../x"),
            ("a//b/./l", "../c"),
            ("l", "x/"),
        ] {
            assert_eq!(symlink_refusal(link, target), None, "{link} -> {target}");
        }
    }
}
