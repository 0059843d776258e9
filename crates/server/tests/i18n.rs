//! The page's words: every key the page uses (`t('key')` in `web/*.js`, `data-i18n*="key"` in
//! `web/index.html`) is in every catalog (`web/locales/*.json`), the catalogs have the same
//! keys, placeholders and plural forms, and the server serves them. A string added to the page
//! without its translation fails here.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The catalogs shipped, and the CLDR plural forms each language needs (Intl.PluralRules).
const LANGUAGES: &[(&str, &[&str])] =
    &[("en", &["one", "other"]), ("ar", &["zero", "one", "two", "few", "many", "other"])];

fn web() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

fn catalog(lang: &str) -> BTreeMap<String, Value> {
    let path = web().join("locales").join(format!("{lang}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let object = value.as_object().unwrap_or_else(|| panic!("{lang}.json is not an object"));
    object.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The quoted string right after each `prefix` in `text` (a key: `t('a.b')`, `data-i18n="a.b"`).
fn quoted_after(text: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        // `t(` must be the function, not the end of another name (`set(`, `split(`).
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if prefix.starts_with('t')
            && before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '$')
        {
            continue;
        }
        let Some(quote) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            continue;
        };
        let body = &rest[1..];
        if let Some(end) = body.find(quote) {
            keys.push(body[..end].to_owned());
        }
    }
    keys
}

/// Every key the page uses, with where it is used.
fn used_keys() -> BTreeMap<String, String> {
    let mut used = BTreeMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(web())
        .expect("web/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "js" || e == "html"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        let mut keys = quoted_after(&text, "t(");
        for attr in
            ["data-i18n=", "data-i18n-title=", "data-i18n-placeholder=", "data-i18n-aria-label="]
        {
            keys.extend(quoted_after(&text, attr));
        }
        for key in keys {
            used.entry(key).or_insert_with(|| name.clone());
        }
    }
    used
}

/// The `{name}` placeholders of a catalog entry (all its plural forms together).
fn placeholders(entry: &Value) -> BTreeSet<String> {
    let texts: Vec<&str> = match entry {
        Value::String(s) => vec![s.as_str()],
        Value::Object(forms) => forms.values().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let mut names = BTreeSet::new();
    for text in texts {
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            rest = &rest[open + 1..];
            if let Some(close) = rest.find('}') {
                let name = &rest[..close];
                if !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    names.insert(name.to_owned());
                }
                rest = &rest[close + 1..];
            }
        }
    }
    names
}

#[test]
fn every_key_the_page_uses_is_translated_in_every_language() {
    let used = used_keys();
    assert!(used.len() > 100, "the scan found only {} keys: is it still reading web/?", used.len());
    assert!(used.contains_key("listen.button"), "index.html's Listen button is not marked up");
    for (lang, _) in LANGUAGES {
        let words = catalog(lang);
        let missing: Vec<String> = used
            .iter()
            .filter(|(key, _)| !words.contains_key(*key))
            .map(|(key, file)| format!("{key} ({file})"))
            .collect();
        assert!(missing.is_empty(), "{lang}.json lacks keys the page uses: {missing:?}");
        let unused: Vec<&String> = words.keys().filter(|k| !used.contains_key(*k)).collect();
        assert!(unused.is_empty(), "{lang}.json has keys the page never uses: {unused:?}");
    }
}

#[test]
fn the_catalogs_agree_on_keys_placeholders_and_plural_forms() {
    let english = catalog("en");
    for (lang, forms) in LANGUAGES {
        let words = catalog(lang);
        let theirs: BTreeSet<&String> = words.keys().collect();
        let ours: BTreeSet<&String> = english.keys().collect();
        assert_eq!(theirs, ours, "{lang}.json and en.json differ in keys");
        for (key, entry) in &words {
            match entry {
                Value::String(s) => {
                    assert!(!s.trim().is_empty(), "{lang}.json: {key} is empty");
                    assert!(
                        english[key].is_string(),
                        "{lang}.json: {key} is a string, in English plural"
                    );
                }
                Value::Object(given) => {
                    let given: BTreeSet<&str> = given.keys().map(String::as_str).collect();
                    let needed: BTreeSet<&str> = forms.iter().copied().collect();
                    assert_eq!(given, needed, "{lang}.json: {key} has the wrong plural forms");
                    assert!(
                        english[key].is_object(),
                        "{lang}.json: {key} is plural, not in English"
                    );
                }
                other => panic!("{lang}.json: {key} is neither text nor plural forms: {other}"),
            }
            // A translation may leave a placeholder out (Arabic says "one listener" in words),
            // but never invent one the page does not fill.
            let extra: Vec<String> =
                placeholders(entry).difference(&placeholders(&english[key])).cloned().collect();
            assert!(
                extra.is_empty(),
                "{lang}.json: {key} uses placeholders English has not: {extra:?}"
            );
        }
    }
    // Arabic is written in Arabic: a sample of what every visitor reads.
    let arabic = catalog("ar");
    for key in ["listen.button", "room.stage", "list.title"] {
        let text = arabic[key].as_str().unwrap_or("");
        assert!(
            text.chars().any(|c| ('\u{0600}'..='\u{06FF}').contains(&c)),
            "ar.json: {key} is not in Arabic: {text}"
        );
    }
}

#[tokio::test]
async fn the_server_serves_the_catalogs_and_the_module() {
    let server = common::server().await;
    let base = format!("http://{}", server.addr());
    let http = common::http();
    for (path, mime) in [
        ("/i18n.js", "text/javascript; charset=utf-8"),
        ("/locales/en.json", "application/json; charset=utf-8"),
        ("/locales/ar.json", "application/json; charset=utf-8"),
    ] {
        let res = http.get(format!("{base}{path}")).send().await.expect("get");
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], mime, "{path}");
        let body = res.bytes().await.expect("body");
        if path.ends_with(".json") {
            let served: Value = serde_json::from_slice(&body).expect("json");
            let lang = path.trim_start_matches("/locales/").trim_end_matches(".json");
            assert_eq!(served.as_object().map(|o| o.len()), Some(catalog(lang).len()), "{path}");
        }
    }
    server.shutdown().await;
}
