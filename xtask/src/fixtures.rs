//! Every hostile fixture is used by some test: an attacker nobody runs proves nothing.

/// `fixtures` are fixture folders (as shown in messages, e.g. `tests/guests/hostile-kv`);
/// `sources` are (path, text) of the files a test may be in. A fixture passes when its name,
/// spelled with `-` or with `_`, stands as a whole word in a file that has a test.
pub fn fixtures(fixtures: &[String], sources: &[(String, String)]) -> Vec<String> {
    let tests: Vec<&str> = sources
        .iter()
        .map(|(_, text)| text.as_str())
        .filter(|text| text.contains("#[test]") || text.contains("#[tokio::test"))
        .collect();
    let mut out = Vec::new();
    for fixture in fixtures {
        let name = fixture.rsplit('/').next().unwrap_or(fixture);
        let (dash, under) = (name.replace('_', "-"), name.replace('-', "_"));
        if !tests
            .iter()
            .any(|t| mentions(t, &dash) || mentions(t, &under))
        {
            let spelled = if dash == under {
                format!("`{dash}`")
            } else {
                format!("`{dash}` or `{under}`")
            };
            out.push(format!(
                "fixture {fixture} has no test: no file with #[test] or #[tokio::test] in a crate's src/ or tests/ names {spelled}"
            ));
        }
    }
    out
}

/// `name` as a whole word: `hostile` is not found in `hostile-kv` or `hostile_kv`.
fn mentions(text: &str, name: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    text.match_indices(name).any(|(i, _)| {
        !text[..i].chars().next_back().is_some_and(word)
            && !text[i + name.len()..].chars().next().is_some_and(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|f| format!("tests/guests/{f}")).collect()
    }

    #[test]
    fn fixtures_named_in_tests_pass() {
        let sources = files(&[
            (
                "crates/a/tests/all/demo.rs",
                "#[test]\nfn t() { load(\"hostile-demo\"); }",
            ),
            (
                "crates/b/src/lib.rs",
                "#[tokio::test(flavor = \"multi_thread\")]\nasync fn t() { hostile_other::run(); run(\"hostile\") }",
            ),
        ]);
        let fx = names(&["hostile", "hostile-demo", "hostile-other"]);
        assert_eq!(fixtures(&fx, &sources), Vec::<String>::new());
    }

    #[test]
    fn a_fixture_without_a_test_fails() {
        let sources = files(&[
            // Named, but in a file without tests.
            (
                "crates/a/tests/common/mod.rs",
                "pub const F: &str = \"hostile-new\";",
            ),
            // In a test file, but only as part of longer names.
            (
                "crates/a/tests/all/main.rs",
                "#[test]\nfn t() { load(\"hostile-new-2\"); load(\"my-hostile-new\"); }",
            ),
        ]);
        assert_eq!(
            fixtures(&names(&["hostile-new"]), &sources),
            [
                "fixture tests/guests/hostile-new has no test: no file with #[test] or #[tokio::test] in a crate's src/ or tests/ names `hostile-new` or `hostile_new`"
            ]
        );
    }
}
