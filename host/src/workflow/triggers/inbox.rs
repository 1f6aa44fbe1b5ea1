//! The inbox trigger: the files of a folder in the workspace whose name
//! matches a pattern, each name and content firing once.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Component, Path};

use redb::{ReadableDatabase, TableDefinition};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::starts::StateWrite;
use super::{Fire, MAX_INBOX_TEXT_BYTES, Plan};
use crate::memory::{Store, StoreError};
use crate::workflow::WorkflowError;

/// Bytes read at a time from an inbox file.
const READ_CHUNK: usize = 64 * 1024;

/// (workflow, file name, sha256) -> (size, ms when it fired): files processed.
pub(super) const INBOX_FILES: TableDefinition<(&str, &str, &str), (u64, u64)> =
    TableDefinition::new("trigger_inbox_files");
/// (workflow, file name) -> (size, modified ns, sha256): the last hash of a
/// file, so an unchanged file is not read again.
pub(super) const INBOX_HASHES: TableDefinition<(&str, &str), (u64, u64, &str)> =
    TableDefinition::new("trigger_inbox_hashes");

/// Whether file name `name` matches `pattern`: `*` stands for any run of
/// characters (also none), `?` for exactly one, every other character for
/// itself (case-sensitive; no brackets or braces). A name starting with
/// `.` only matches a pattern starting with `.`, as in a shell, so hidden
/// and temporary files are left alone.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // The last `*` seen and the name position it is tried at.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
                continue;
            }
            _ => {}
        }
        let Some((sp, sn)) = star else { return false };
        // Let the `*` take one more character and try again.
        star = Some((sp, sn + 1));
        pi = sp + 1;
        ni = sn + 1;
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// An inbox file as read: its hash, size and text.
#[derive(Debug, Clone, PartialEq)]
struct FileContent {
    sha256: String,
    size: u64,
    text: Option<String>,
    /// Why `text` is `None`.
    note: Option<String>,
}

/// Reads `path` once, hashing all of it and keeping its text if it is
/// UTF-8 of at most [`MAX_INBOX_TEXT_BYTES`].
fn read_inbox_file(path: &Path) -> std::io::Result<FileContent> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut kept = Vec::new();
    let mut size = 0u64;
    let mut too_big = false;
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&chunk[..n]);
        size += n as u64;
        if too_big {
            continue;
        }
        if size > MAX_INBOX_TEXT_BYTES {
            too_big = true;
            kept = Vec::new();
        } else {
            kept.extend_from_slice(&chunk[..n]);
        }
    }
    let (text, note) = if too_big {
        let note = format!("the file is larger than {MAX_INBOX_TEXT_BYTES} bytes: its text is left out");
        (None, Some(note))
    } else {
        match String::from_utf8(kept) {
            Ok(text) => (Some(text), None),
            Err(_) => (None, Some("the file is not UTF-8 text: its text is left out".to_owned())),
        }
    };
    Ok(FileContent { sha256: hex::encode(hasher.finalize()), size, text, note })
}

/// `folder/name` with `/` separators.
pub(super) fn relative_path(folder: &Path, name: &str) -> String {
    let mut parts: Vec<String> = folder
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    parts.push(name.to_owned());
    parts.join("/")
}

fn modified_ns(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The key of an inbox fire: the file's name and content.
fn inbox_key(sha256: &str, name: &str) -> String {
    format!("inbox/{sha256}/{name}")
}

/// What the database knows about one inbox workflow's files.
#[derive(Debug, Default)]
struct InboxMemory {
    hashes: HashMap<String, (u64, u64, String)>,
    processed: BTreeSet<(String, String)>,
}

fn inbox_memory(store: &Store, workflow: &str) -> Result<InboxMemory, StoreError> {
    let txn = store.db().begin_read()?;
    let mut memory = InboxMemory::default();
    for item in txn.open_table(INBOX_HASHES)?.range((workflow, "")..)? {
        let (k, v) = item?;
        let (w, name) = k.value();
        if w != workflow {
            break;
        }
        let (size, modified, sha) = v.value();
        memory.hashes.insert(name.to_owned(), (size, modified, sha.to_owned()));
    }
    for item in txn.open_table(INBOX_FILES)?.range((workflow, "", "")..)? {
        let (k, _) = item?;
        let (w, name, sha) = k.value();
        if w != workflow {
            break;
        }
        memory.processed.insert((name.to_owned(), sha.to_owned()));
    }
    Ok(memory)
}

pub(super) fn plan_inbox(
    store: &Store,
    workflow: &str,
    root: &Path,
    folder: &Path,
    pattern: &str,
    now_ms: u64,
    mut budget: usize,
) -> Result<Plan, WorkflowError> {
    let shown = relative_path(folder, "");
    let shown = shown.trim_end_matches('/');
    let dir = root.join(folder);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Plan::note(format!(
                "inbox folder {shown} does not exist in the workspace: create it to start receiving files"
            )));
        }
        Err(e) => return Ok(Plan::note(format!("cannot list inbox folder {shown}: {e}"))),
    };
    match (dir.canonicalize(), root.canonicalize()) {
        (Ok(d), Ok(r)) if d.starts_with(&r) => {}
        _ => {
            return Ok(Plan::note(format!(
                "inbox folder {shown} resolves outside the workspace (a symlink?): nothing in it is read"
            )));
        }
    }
    let mut names = Vec::new();
    let mut unreadable_names = 0;
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => return Ok(Plan::note(format!("cannot list inbox folder {shown}: {e}"))),
        };
        // Symlinks and folders are not files of the inbox.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) if glob_matches(pattern, &name) => names.push(name),
            Ok(_) => {}
            Err(_) => unreadable_names += 1,
        }
    }
    names.sort();
    let known = inbox_memory(store, workflow)?;
    let mut plan = Plan::default();
    if unreadable_names > 0 {
        plan.notes.push(format!("{unreadable_names} file name(s) in {shown} are not UTF-8 and are skipped"));
    }
    for name in names {
        let path = dir.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if !meta.is_file() {
            continue;
        }
        let modified = modified_ns(&meta);
        let cached = known.hashes.get(&name);
        if let Some((size, m, sha)) = cached
            && *size == meta.len()
            && *m == modified
            && modified != 0
            && known.processed.contains(&(name.clone(), sha.clone()))
        {
            continue;
        }
        if budget == 0 {
            plan.held += 1;
            continue;
        }
        let content = match read_inbox_file(&path) {
            Ok(content) => content,
            Err(e) => {
                plan.notes.push(format!("cannot read {}: {e}", relative_path(folder, &name)));
                continue;
            }
        };
        let unchanged_cache =
            cached.is_some_and(|(s, m, sha)| (*s, *m, sha) == (content.size, modified, &content.sha256));
        if !unchanged_cache && content.size == meta.len() {
            plan.writes.push(StateWrite::InboxHash {
                name: name.clone(),
                size: content.size,
                modified_ns: modified,
                sha256: content.sha256.clone(),
            });
        }
        if known.processed.contains(&(name.clone(), content.sha256.clone())) {
            continue;
        }
        let path = relative_path(folder, &name);
        let mut input = json!({
            "file": name,
            "path": path,
            "size": content.size,
            "text": content.text,
            "sha256": content.sha256,
        });
        if let Some(note) = &content.note {
            input["note"] = Value::String(note.clone());
        }
        let detail = format!("file {path} ({} bytes, sha256 {})", content.size, &content.sha256[..12]);
        plan.fires.push(Fire { key: inbox_key(&content.sha256, &name), input, detail });
        plan.writes.push(StateWrite::InboxFile { name, sha256: content.sha256, size: content.size, at_ms: now_ms });
        budget -= 1;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names() {
        assert!(glob_matches("*", "a.txt"));
        assert!(glob_matches("*.txt", "a.txt"));
        assert!(!glob_matches("*.txt", ".a.txt"), "hidden files need a pattern starting with '.'");
        assert!(glob_matches(".*", ".hidden"));
        assert!(!glob_matches("*.txt", "a.csv"));
        assert!(!glob_matches("*.txt", "a.txt.bak"));
        assert!(glob_matches("lead-??.json", "lead-07.json"));
        assert!(!glob_matches("lead-??.json", "lead-7.json"));
        assert!(glob_matches("a*b*c", "aXbYbZc"));
        assert!(!glob_matches("a*b*c", "aXbYbZ"));
        assert!(glob_matches("**", ""));
        assert!(glob_matches("", ""));
        assert!(!glob_matches("", "a"));
        assert!(glob_matches("report", "report"));
        assert!(!glob_matches("Report", "report"), "case-sensitive");
        assert!(glob_matches("é?*", "éà"), "characters, not bytes");
        assert!(glob_matches("[a].txt", "[a].txt"), "brackets are literal");
        assert!(glob_matches("*a", "aaaa"));
        assert!(!glob_matches("*a?", "a"));
    }

    #[test]
    fn inbox_files_are_hashed_and_their_text_kept_when_small_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("a.txt");
        std::fs::write(&small, "héllo").unwrap();
        let c = read_inbox_file(&small).unwrap();
        assert_eq!(c.sha256, crate::runtime::sha256_hex("héllo".as_bytes()));
        assert_eq!((c.size, c.text.as_deref(), c.note), (6, Some("héllo"), None));

        let binary = dir.path().join("b.bin");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        let c = read_inbox_file(&binary).unwrap();
        assert_eq!((c.size, c.text), (3, None));
        assert!(c.note.unwrap().contains("not UTF-8"));

        let big = dir.path().join("big.txt");
        let bytes = vec![b'x'; MAX_INBOX_TEXT_BYTES as usize + 1];
        std::fs::write(&big, &bytes).unwrap();
        let c = read_inbox_file(&big).unwrap();
        assert_eq!((c.size, c.text, c.sha256), (bytes.len() as u64, None, crate::runtime::sha256_hex(&bytes)));
        assert!(c.note.unwrap().contains("larger than"));

        let exact = dir.path().join("exact.txt");
        std::fs::write(&exact, &bytes[1..]).unwrap();
        assert!(read_inbox_file(&exact).unwrap().text.is_some(), "exactly the limit keeps its text");
    }

    #[test]
    fn inbox_paths_use_slashes() {
        assert_eq!(relative_path(Path::new("inbox/leads"), "a.txt"), "inbox/leads/a.txt");
        assert_eq!(relative_path(Path::new("inbox"), ""), "inbox/");
    }
}
