//! `warden new`: a new extension folder that builds, packs and runs as it is, in Rust,
//! JavaScript or Python, for the http or the rpc world.
//!
//! Everything the folder holds is embedded in the binary, so an installed `warden` needs no
//! checkout: the templates (`new/`: sources, Cargo files, build scripts) and, in [`REPO_FILES`],
//! the files shared with this repository (the WIT packages, laid out in `wit/deps/` as
//! `scripts/build-examples.sh` lays them out for the examples, and the SDK's build scripts with
//! their pins). [`plan`] decides the files without touching the disk; [`run`] checks the target,
//! writes the folder whole (a temporary folder renamed into place) and prints the next steps.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};

/// The language of a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

/// The world a template exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum World {
    /// `wasi:http/incoming-handler`: `warden run --http`, the gateway's routes.
    Http,
    /// `warden:extension/handler`: `warden run --call`, the runner API, routes with `call`.
    Rpc,
}

impl Lang {
    fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Js => "JavaScript",
            Lang::Python => "Python",
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            World::Http => "http",
            World::Rpc => "rpc",
        })
    }
}

/// The publisher a new extension names until its author puts theirs (its README says so).
pub const PLACEHOLDER_PUBLISHER: &str = "my-publisher";

/// The name of a new extension: its folder, the last label of its id, its Rust crate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    /// Longest name: well inside an extension id's 128 bytes with a publisher in front.
    pub const MAX_LEN: usize = 64;
}

impl FromStr for Name {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rule = "a name is 1 to 64 characters of a-z, 0-9 and '-', starting with a letter \
                    and not ending with '-'";
        let valid = s.len() <= Self::MAX_LEN
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Name(s.to_string()))
        } else {
            Err(rule.to_string())
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Names a Rust crate cannot have (the ones `cargo new` refuses): keywords and the crates of
/// the standard library.
const RUST_RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc-macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// One file of the new folder: its path inside it, its text, and whether it is a script.
pub struct File {
    pub path: String,
    pub text: String,
    pub executable: bool,
}

/// Which templates take a file of the repository.
#[derive(Clone, Copy)]
enum For {
    All,
    Lang(Lang),
}

/// The files every new folder shares with this repository, embedded: (which templates, path in
/// the new folder, text). The WIT packages are laid out as `scripts/build-examples.sh` lays them
/// out for the examples: `wit/*.wit` as `wit/deps/warden-extension/`, `wit/deps/*` as they are,
/// `wit/wasi/NAME.wit` as `wit/deps/wasi-NAME.wit`. The SDK's build script goes into
/// `.warden-sdk/` with the pins it expects beside itself; the folder's own `build.sh` calls it.
const REPO_FILES: &[(For, &str, &str)] = &[
    (
        For::All,
        "wit/deps/warden-extension/warden.wit",
        include_str!("../../../../wit/warden.wit"),
    ),
    (
        For::All,
        "wit/deps/warden-extension/secrets.wit",
        include_str!("../../../../wit/secrets.wit"),
    ),
    (
        For::All,
        "wit/deps/config/store.wit",
        include_str!("../../../../wit/deps/config/store.wit"),
    ),
    (
        For::All,
        "wit/deps/config/world.wit",
        include_str!("../../../../wit/deps/config/world.wit"),
    ),
    (
        For::All,
        "wit/deps/keyvalue/atomic.wit",
        include_str!("../../../../wit/deps/keyvalue/atomic.wit"),
    ),
    (
        For::All,
        "wit/deps/keyvalue/batch.wit",
        include_str!("../../../../wit/deps/keyvalue/batch.wit"),
    ),
    (
        For::All,
        "wit/deps/keyvalue/store.wit",
        include_str!("../../../../wit/deps/keyvalue/store.wit"),
    ),
    (
        For::All,
        "wit/deps/keyvalue/watch.wit",
        include_str!("../../../../wit/deps/keyvalue/watch.wit"),
    ),
    (
        For::All,
        "wit/deps/keyvalue/world.wit",
        include_str!("../../../../wit/deps/keyvalue/world.wit"),
    ),
    (
        For::All,
        "wit/deps/logging/logging.wit",
        include_str!("../../../../wit/deps/logging/logging.wit"),
    ),
    (
        For::All,
        "wit/deps/logging/world.wit",
        include_str!("../../../../wit/deps/logging/world.wit"),
    ),
    (
        For::All,
        "wit/deps/wasi-cli.wit",
        include_str!("../../../../wit/wasi/cli.wit"),
    ),
    (
        For::All,
        "wit/deps/wasi-clocks.wit",
        include_str!("../../../../wit/wasi/clocks.wit"),
    ),
    (
        For::All,
        "wit/deps/wasi-filesystem.wit",
        include_str!("../../../../wit/wasi/filesystem.wit"),
    ),
    (
        For::All,
        "wit/deps/wasi-http.wit",
        include_str!("../../../../wit/wasi/http.wit"),
    ),
    (
        For::All,
        "wit/deps/wasi-io.wit",
        include_str!("../../../../wit/wasi/io.wit"),
    ),
    (
        For::All,
        "wit/deps/wasi-random.wit",
        include_str!("../../../../wit/wasi/random.wit"),
    ),
    (
        For::All,
        "wit/deps/wasi-sockets.wit",
        include_str!("../../../../wit/wasi/sockets.wit"),
    ),
    (
        For::Lang(Lang::Js),
        ".warden-sdk/build.sh",
        include_str!("../../../../sdk/js/build.sh"),
    ),
    (
        For::Lang(Lang::Js),
        ".warden-sdk/guest-types.mjs",
        include_str!("../../../../sdk/js/guest-types.mjs"),
    ),
    (
        For::Lang(Lang::Js),
        ".warden-sdk/package.json",
        include_str!("../../../../sdk/js/package.json"),
    ),
    (
        For::Lang(Lang::Js),
        ".warden-sdk/package-lock.json",
        include_str!("../../../../sdk/js/package-lock.json"),
    ),
    (
        For::Lang(Lang::Python),
        ".warden-sdk/build.sh",
        include_str!("../../../../sdk/python/build.sh"),
    ),
    (
        For::Lang(Lang::Python),
        ".warden-sdk/requirements.txt",
        include_str!("../../../../sdk/python/requirements.txt"),
    ),
];

/// The templates of this command (`new/`), embedded. `{{name}}` is the extension's name,
/// `{{crate}}` its Rust library's.
mod template {
    pub const RUST_HTTP: &str = include_str!("new/rust/http.rs");
    pub const RUST_RPC: &str = include_str!("new/rust/rpc.rs");
    pub const RUST_HTTP_CARGO: &str = include_str!("new/rust/http.Cargo.toml");
    pub const RUST_RPC_CARGO: &str = include_str!("new/rust/rpc.Cargo.toml");
    /// The lock files without the extension's own package (added by `cargo_lock`): the versions
    /// of examples/Cargo.lock.
    pub const RUST_HTTP_LOCK: &str = include_str!("new/rust/http.Cargo.lock");
    pub const RUST_RPC_LOCK: &str = include_str!("new/rust/rpc.Cargo.lock");
    pub const RUST_BUILD: &str = include_str!("new/rust/build.sh");
    pub const JS_HTTP: &str = include_str!("new/js/http.js");
    pub const JS_RPC: &str = include_str!("new/js/rpc.js");
    pub const PYTHON_HTTP: &str = include_str!("new/python/http.py");
    pub const PYTHON_RPC: &str = include_str!("new/python/rpc.py");
    /// `build.sh` of a JavaScript or Python extension: calls `.warden-sdk/build.sh`.
    pub const SDK_BUILD: &str = include_str!("new/sdk-build.sh");
    pub const GITIGNORE: &str = include_str!("new/gitignore");
}

/// Every file of the new extension `name`, in order; nothing is written.
pub fn plan(name: &Name, lang: Lang, world: World) -> Vec<File> {
    let fill = |t: &str| {
        t.replace("{{name}}", &name.0)
            .replace("{{crate}}", &name.0.replace('-', "_"))
    };
    let file = |path: &str, text: String| File {
        path: path.to_string(),
        text,
        executable: false,
    };
    let mut files = vec![
        file("extension.toml", manifest(name, lang, world)),
        file("README.md", readme(name, lang, world)),
        file(".gitignore", template::GITIGNORE.to_string()),
    ];
    let build = match lang {
        Lang::Rust => {
            let (cargo, lock, deps, source) = match world {
                World::Http => (
                    template::RUST_HTTP_CARGO,
                    template::RUST_HTTP_LOCK,
                    &["wasip2"][..],
                    template::RUST_HTTP,
                ),
                World::Rpc => (
                    template::RUST_RPC_CARGO,
                    template::RUST_RPC_LOCK,
                    &["serde_json", "wit-bindgen"][..],
                    template::RUST_RPC,
                ),
            };
            files.push(file("Cargo.toml", fill(cargo)));
            files.push(file("Cargo.lock", cargo_lock(lock, &name.0, deps)));
            files.push(file("src/lib.rs", fill(source)));
            fill(template::RUST_BUILD)
        }
        Lang::Js | Lang::Python => {
            let (path, source) = match (lang, world) {
                (Lang::Js, World::Http) => ("index.js", template::JS_HTTP),
                (Lang::Js, World::Rpc) => ("index.js", template::JS_RPC),
                (_, World::Http) => ("app.py", template::PYTHON_HTTP),
                (_, World::Rpc) => ("app.py", template::PYTHON_RPC),
            };
            let (tool, needs) = if lang == Lang::Js {
                ("componentize-js", "Node.js 18+ with npm")
            } else {
                ("componentize-py", "python3 (3.9+) with venv")
            };
            files.push(file(path, fill(source)));
            fill(template::SDK_BUILD)
                .replace("{{source}}", path)
                .replace("{{lang}}", lang.title())
                .replace("{{tool}}", tool)
                .replace("{{needs}}", needs)
        }
    };
    files.push(File {
        path: "build.sh".into(),
        text: build,
        executable: true,
    });
    files.push(file("wit/world.wit", world_wit(lang, world)));
    for (which, path, text) in REPO_FILES {
        let wanted = match which {
            For::All => true,
            For::Lang(l) => *l == lang,
        };
        if wanted {
            files.push(File {
                path: (*path).to_string(),
                text: (*text).to_string(),
                executable: path.ends_with(".sh"),
            });
        }
    }
    files
}

/// `template` (a lock file without the root package) with the package `name` depending on
/// `deps`, put where cargo sorts it, so the first build leaves the file as it is.
fn cargo_lock(template: &str, name: &str, deps: &[&str]) -> String {
    const SEP: &str = "\n[[package]]\n";
    let mut root = format!("name = \"{name}\"\nversion = \"0.1.0\"\n");
    if !deps.is_empty() {
        root += "dependencies = [\n";
        for d in deps {
            root += &format!(" \"{d}\",\n");
        }
        root += "]\n";
    }
    let mut parts = template.split(SEP);
    let head = parts.next().unwrap_or_default();
    let mut blocks: Vec<&str> = parts.collect();
    let name_of = |block: &str| {
        block
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
            .map(str::to_string)
    };
    let at = blocks
        .iter()
        .position(|b| name_of(b).is_some_and(|n| n.as_str() > name))
        .unwrap_or(blocks.len());
    blocks.insert(at, &root);
    let mut out = head.to_string();
    for b in blocks {
        out += SEP;
        out += b;
    }
    out
}

fn manifest(name: &Name, lang: Lang, world: World) -> String {
    let p = PLACEHOLDER_PUBLISHER;
    let (description, calls) = match world {
        World::Http => (
            "Answers every request with a greeting.",
            "# The routes `warden serve` forwards to it (`warden run --http` takes any).\n\
             [[endpoints]]\n\
             method = \"GET\"\n\
             path = \"/{*rest}\"\n",
        ),
        World::Rpc => (
            "Greets by name: the method greet.",
            "# The methods it may be called with (`warden run --call`, the runner API).\n\
             [[methods]]\n\
             name = \"greet\"\n\
             \n\
             # Through the gateway (`warden serve`): the body is the input, the answer the response.\n\
             [[endpoints]]\n\
             method = \"POST\"\n\
             path = \"/greet\"\n\
             call = \"greet\"\n",
        ),
    };
    let profile = match lang {
        Lang::Rust => "profile = \"strict\"              # 16 MiB, 1 s per call, 4 calls at once",
        Lang::Js => {
            "profile = \"standard\"            # a JavaScript engine needs more than strict's 16 MiB"
        }
        Lang::Python => {
            "profile = \"standard\"            # a Python interpreter needs more than strict's 16 MiB"
        }
    };
    format!(
        "# Made by `warden new`. `{p}` is a placeholder: put your publisher name in `id` and\n\
         # `publisher` before you sign it for anyone else (see README.md).\n\
         schema = 1\n\
         \n\
         [extension]\n\
         id = \"{p}.{name}\"\n\
         version = \"0.1.0\"\n\
         publisher = \"{p}\"\n\
         kind = \"component\"\n\
         entry = \"extension.wasm\"\n\
         description = \"{description}\"\n\
         \n\
         {calls}\
         \n\
         # Denied by default: an extension gets what it asks for here AND the operator grants\n\
         # (`warden run --grant ...`) AND the operator's policy allows. This one asks for nothing.\n\
         [permissions]\n\
         kv = false                      # a key-value store private to (tenant, extension)\n\
         secrets = []                    # names of secrets it may read, e.g. [\"API_TOKEN\"]\n\
         calls = []                      # ids of extensions it may call\n\
         \n\
         [permissions.network]\n\
         enabled = false                 # outgoing HTTP\n\
         allowed_hosts = []              # e.g. [\"api.example.com\"]\n\
         \n\
         [limits]\n\
         {profile}\n"
    )
}

fn world_wit(lang: Lang, world: World) -> String {
    let body = match (lang, world) {
        (Lang::Js, World::Http) => {
            "/// The http-extension world: the standard incoming handler (so `wasmtime serve` runs it\n\
             /// too). WASI at 0.2.10 for componentize-js 0.23 (see .warden-sdk/build.sh); the host\n\
             /// links any 0.2.x.\n\
             world extension {\n    export wasi:http/incoming-handler@0.2.10;\n}\n"
        }
        (Lang::Rust, World::Http) => {
            "/// The http-extension world: the standard incoming handler (so `wasmtime serve` runs it\n\
             /// too). The Rust source gets its bindings from the `wasip2` crate.\n\
             world extension {\n    export wasi:http/incoming-handler@0.2.12;\n}\n"
        }
        (Lang::Python, World::Http) => {
            "/// The http-extension world: the standard incoming handler (so `wasmtime serve` runs it\n\
             /// too).\n\
             world extension {\n    export wasi:http/incoming-handler@0.2.12;\n}\n"
        }
        (_, World::Rpc) => {
            "/// The rpc-extension world: exports `warden:extension/handler`, may import\n\
             /// `warden:extension/invoke`. Add what else it uses here (and ask for it in\n\
             /// extension.toml), e.g. `import wasi:keyvalue/store@0.2.0-draft;` with `kv = true`.\n\
             world extension {\n    include warden:extension/rpc-extension@0.1.0;\n}\n"
        }
    };
    format!("package local:extension;\n\n{body}")
}

/// The commands that build, sign and run the new extension, from its folder.
fn commands(name: &Name, world: World) -> Vec<String> {
    let p = PLACEHOLDER_PUBLISHER;
    let invocation = match world {
        World::Http => "--http \"GET /hello\"",
        World::Rpc => "--call greet --input '{\"name\":\"Ada\"}'",
    };
    vec![
        "./build.sh".into(),
        format!("warden keygen --publisher {p} --out keys >> trust.toml"),
        format!("warden pack . --out {name}.wext"),
        format!("warden sign {name}.wext --key keys/{p}.key"),
        format!("warden run {name}.wext --trust trust.toml {invocation}"),
    ]
}

fn readme(name: &Name, lang: Lang, world: World) -> String {
    let p = PLACEHOLDER_PUBLISHER;
    let (what, answer) = match world {
        World::Http => (
            "it answers every request with a greeting".to_string(),
            format!("`warden run` prints the response, `Hello from {name}! You asked for /hello`."),
        ),
        World::Rpc => (
            "its method `greet` takes a name (`{\"name\": \"...\"}`, a JSON string or plain text) \
             and answers with a greeting"
                .to_string(),
            "`warden run` prints the answer, `{\"greeting\":\"Hello, Ada!\"}`.".to_string(),
        ),
    };
    let (needs, source, build) = match lang {
        Lang::Rust => (
            "Rust with rustup (https://rustup.rs)",
            "`Cargo.toml`, `Cargo.lock` and `src/lib.rs`",
            "`build.sh` adds the `wasm32-wasip2` target if it is missing, runs `cargo build \
             --release --target wasm32-wasip2` and copies the component to `extension.wasm`",
        ),
        Lang::Js => (
            "Node.js 18+ with npm",
            "`index.js`",
            "`build.sh` runs `.warden-sdk/build.sh`, warden's build script, with componentize-js \
             and jco as `.warden-sdk/package-lock.json` pins them, installed on first use under \
             `$WARDEN_TOOLS` (default `~/.cache/warden/tools`); it also writes `types/`, the \
             TypeScript declarations of every interface the world imports and exports, for your \
             editor",
        ),
        Lang::Python => (
            "python3 (3.9+) with venv",
            "`app.py` (the modules beside it are included)",
            "`build.sh` runs `.warden-sdk/build.sh`, warden's build script, with componentize-py \
             as `.warden-sdk/requirements.txt` pins it (with its hash), installed on first use \
             under `$WARDEN_TOOLS` (default `~/.cache/warden/tools`)",
        ),
    };
    let mut md = format!("# {name}\n\n");
    let para = |text: &str| wrap(text, "", "") + "\n";
    md += &para(&format!(
        "A warden {world} extension in {}, made by `warden new`: {what}.\n",
        lang.title()
    ));
    md += &para("## Build, sign and run");
    md += &para(&format!(
        "It needs {needs}, and `warden` on your PATH. In this folder:"
    ));
    md += &format!("```sh\n{}\n```\n\n", commands(name, world).join("\n"));
    md += &para(&format!(
        "{build}. `warden keygen` writes a signing key to `keys/` (keep `keys/{p}.key` secret: \
             never put it in a bundle or a repository) and adds its public key to the trust \
             bundle `trust.toml`. `warden pack` makes the bundle and `warden sign` its signature \
             (`{name}.wext.sig`); `warden run` verifies both against `trust.toml`, calls the \
             extension once and records the call in `./warden-data`. {answer}\n"
    ));
    md += &para("## Your publisher name");
    md += &para(&format!(
        "`{p}` is a placeholder. Put your publisher name in `extension.toml` (the first label \
             of `id`, and `publisher`) and in the commands above before you sign the extension \
             for anyone else: operators trust a publisher's keys by its name.\n"
    ));
    md += &para("## What is here");
    for item in [
        "`extension.toml`: the manifest. Every permission is denied unless it is asked for there \
         and the operator grants it (`warden run --grant ...`); this extension asks for none."
            .to_string(),
        format!("{source}: the extension."),
        "`wit/world.wit`: its world; `wit/deps/`: the WIT packages a world may use \
         (`warden:extension`, `wasi:keyvalue`, `wasi:config`, `wasi:logging`, WASI 0.2)."
            .to_string(),
        "`build.sh`: builds `extension.wasm`, the one file `warden pack` takes besides the \
         manifest (and the folders `assets/` and `ui/`, if you add them)."
            .to_string(),
    ] {
        md += &wrap(&item, "- ", "  ");
    }
    md
}

/// `text` (one paragraph of Markdown) in lines of at most 100 columns, the first starting with
/// `first`, the others with `rest`; each line ends with a newline. A code span is never cut, nor
/// a word longer than a line.
fn wrap(text: &str, first: &str, rest: &str) -> String {
    const WIDTH: usize = 100;
    // The words, with the words of a code span joined into one.
    let mut words: Vec<String> = Vec::new();
    let mut open = false;
    for w in text.split_whitespace() {
        match words.last_mut() {
            Some(last) if open => {
                last.push(' ');
                last.push_str(w);
            }
            _ => words.push(w.to_string()),
        }
        if w.matches('`').count() % 2 == 1 {
            open = !open;
        }
    }
    let mut out = String::new();
    let mut line = first.to_string();
    let mut empty = true;
    for word in &words {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            out += &line;
            out += "\n";
            line = rest.to_string();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line += word;
        empty = false;
    }
    out += &line;
    out += "\n";
    out
}

/// `warden new NAME --lang L --world W [--dir PARENT]`.
pub fn run(name: &Name, lang: Lang, world: World, parent: Option<&Path>) -> Result<()> {
    if lang == Lang::Rust {
        rust_name(name, world)?;
    }
    let shown = match parent {
        Some(p) => p.join(&name.0),
        None => PathBuf::from(&name.0),
    };
    let parent = parent.unwrap_or(Path::new("."));
    check_target(&shown)?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    write_folder(parent, &shown, &plan(name, lang, world))?;
    outln!(
        "Created {}: a {} {world} extension, {PLACEHOLDER_PUBLISHER}.{name}.",
        shown.display(),
        lang.title()
    );
    outln!();
    outln!("Next steps:");
    outln!("  cd {}", shell_word(&shown.to_string_lossy()));
    for c in commands(name, world) {
        outln!("  {c}");
    }
    outln!();
    outln!(
        "{PLACEHOLDER_PUBLISHER} is a placeholder: put your publisher name in extension.toml \
         before you sign it for anyone else (README.md says how)."
    );
    Ok(())
}

/// Refuses a name a Rust crate cannot have, or that clashes with one of the template's own
/// dependencies (cargo takes `-` and `_` for the same).
fn rust_name(name: &Name, world: World) -> Result<()> {
    let lock = match world {
        World::Http => template::RUST_HTTP_LOCK,
        World::Rpc => template::RUST_RPC_LOCK,
    };
    let same = |other: &str| other.replace('_', "-") == name.0;
    if RUST_RESERVED.iter().any(|r| same(r)) {
        bail!(super::UsageError(format!(
            "\"{name}\" cannot name a Rust crate (it is a keyword or a standard crate's name)"
        )));
    }
    let dependency = lock.lines().find_map(|l| {
        l.strip_prefix("name = \"")
            .and_then(|l| l.strip_suffix('"'))
            .filter(|n| same(n))
    });
    if let Some(d) = dependency {
        bail!(super::UsageError(format!(
            "\"{name}\" cannot name this Rust extension: it depends on the crate {d}"
        )));
    }
    Ok(())
}

/// Refuses anything at `dir` but an empty folder.
fn check_target(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("looking at {}", dir.display())),
        Ok(m) if m.is_dir() => {
            let mut entries =
                fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
            if entries.next().is_some() {
                bail!(
                    "{} already exists and is not empty; nothing was written",
                    dir.display()
                );
            }
            Ok(())
        }
        Ok(_) => bail!(
            "{} already exists and is not a folder; nothing was written",
            dir.display()
        ),
    }
}

/// Writes `files` into a temporary folder in `parent`, then renames it to `dir` (an empty
/// folder there is replaced): the folder appears whole, or not at all.
fn write_folder(parent: &Path, dir: &Path, files: &[File]) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = tempfile::Builder::new()
        .prefix(".warden-new-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a temporary folder in {}", parent.display()))?;
    for f in files {
        let path = tmp.path().join(&f.path);
        if let Some(d) = path.parent() {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mode = if f.executable { 0o755 } else { 0o644 };
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut out| out.write_all(f.text.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
        .with_context(|| format!("setting permissions of {}", tmp.path().display()))?;
    fs::rename(tmp.path(), dir).with_context(|| {
        format!(
            "moving the new folder to {} (it must be missing or empty)",
            dir.display()
        )
    })?;
    // Renamed: nothing is left for the guard to remove.
    let _ = tmp.keep();
    Ok(())
}

/// `s` as one shell word, quoted only when it must be.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./-+=:,@".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "hello", "hello-world", "a1", "x-2-y"] {
            assert!(good.parse::<Name>().is_ok(), "{good}");
        }
        let long = "a".repeat(Name::MAX_LEN + 1);
        for bad in [
            "", "A", "1a", "-a", "a-", "a_b", "a.b", "a/b", "../a", "é", &long,
        ] {
            assert!(bad.parse::<Name>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        let name: Name = "t".parse().unwrap();
        for lang in [Lang::Rust, Lang::Js, Lang::Python] {
            for world in [World::Http, World::Rpc] {
                for f in plan(&name, lang, world) {
                    assert!(!f.text.contains("{{"), "{} ({lang:?} {world})", f.path);
                }
            }
        }
    }

    #[test]
    fn the_lock_puts_the_package_in_order() {
        let t = "head\n\n[[package]]\nname = \"b\"\n\n[[package]]\nname = \"d\"\n";
        assert_eq!(
            cargo_lock(t, "c", &["b"]),
            "head\n\n[[package]]\nname = \"b\"\n\n[[package]]\nname = \"c\"\nversion = \
             \"0.1.0\"\ndependencies = [\n \"b\",\n]\n\n[[package]]\nname = \"d\"\n"
        );
        assert!(
            cargo_lock(t, "z", &[])
                .ends_with("\n\n[[package]]\nname = \"z\"\nversion = \"0.1.0\"\n")
        );
    }
}
