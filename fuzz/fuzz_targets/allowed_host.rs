#![no_main]
//! Any string as an allowed-host entry and as a request host. Parsing never panics; an accepted
//! entry prints back to a string that parses to the same entry; a wildcard never matches a host
//! outside its suffix.

use libfuzzer_sys::fuzz_target;
use warden_manifest::{AllowedHost, HostPattern, RequestHost, Scheme};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (entry, request) = text.split_once('\n').unwrap_or((text, text));
    if let Ok(h) = entry.parse::<AllowedHost>() {
        let again: AllowedHost = h.to_string().parse().expect("display of an accepted entry parses");
        assert_eq!(again, h);
        if let Ok(r) = RequestHost::parse(request) {
            let m = h.matches(Scheme::Https, &r, 443, &[]);
            if let (HostPattern::Subdomains(suffix), RequestHost::Name(name), true) = (&h.host, &r, m) {
                assert!(name.ends_with(&format!(".{suffix}")), "{name} matched *.{suffix}");
            }
        }
    }
    let _ = RequestHost::parse(entry);
});
