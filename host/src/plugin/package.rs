//! The single-file plugin package: a component with its manifest appended
//! as a top-level custom section named [`MANIFEST_SECTION`].
//!
//! One file means the manifest travels, and is later signed, together with
//! the code. `keel pack` writes the section; `keel install` reads it.

/// Name of the custom section that carries `plugin.toml`.
pub const MANIFEST_SECTION: &str = "keel-manifest";

/// Returns `component` with `manifest` appended as a custom section,
/// replacing any earlier manifest section.
pub fn pack(component: &[u8], manifest: &str) -> Vec<u8> {
    let mut out = strip_manifest(component);
    let mut payload = Vec::new();
    write_leb(&mut payload, MANIFEST_SECTION.len() as u64);
    payload.extend_from_slice(MANIFEST_SECTION.as_bytes());
    payload.extend_from_slice(manifest.as_bytes());
    out.push(0);
    write_leb(&mut out, payload.len() as u64);
    out.extend_from_slice(&payload);
    out
}

/// The embedded manifest text, if the file carries one.
pub fn embedded_manifest(bytes: &[u8]) -> Option<Result<String, std::string::FromUtf8Error>> {
    let found = top_level_sections(bytes).find(|s| s.name == MANIFEST_SECTION)?;
    Some(String::from_utf8(bytes[found.payload.clone()].to_vec()))
}

fn strip_manifest(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let spans: Vec<_> = top_level_sections(bytes).filter(|s| s.name == MANIFEST_SECTION).map(|s| s.whole).collect();
    for span in spans.into_iter().rev() {
        out.drain(span);
    }
    out
}

struct CustomSection<'a> {
    name: &'a str,
    whole: std::ops::Range<usize>,
    payload: std::ops::Range<usize>,
}

/// Walks the top-level sections of a component, yielding custom ones. Stops
/// quietly at the first malformed section: validation reports those.
fn top_level_sections(bytes: &[u8]) -> impl Iterator<Item = CustomSection<'_>> {
    let mut pos = 8usize;
    std::iter::from_fn(move || {
        while pos < bytes.len() {
            let start = pos;
            let id = bytes[pos];
            let (size, n) = read_leb(bytes.get(pos + 1..)?)?;
            let body = pos + 1 + n;
            let end = body.checked_add(usize::try_from(size).ok()?)?;
            if end > bytes.len() {
                return None;
            }
            pos = end;
            if id == 0 {
                let (name_len, m) = read_leb(&bytes[body..end])?;
                let name_end = (body + m).checked_add(usize::try_from(name_len).ok()?)?;
                if name_end > end {
                    return None;
                }
                let name = std::str::from_utf8(&bytes[body + m..name_end]).ok()?;
                return Some(CustomSection { name, whole: start..end, payload: name_end..end });
            }
        }
        None
    })
}

fn write_leb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_leb(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: magic plus the component-layer version.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

    #[test]
    fn pack_then_read_round_trips() {
        let packed = pack(EMPTY_COMPONENT, "name = 'x'");
        assert_eq!(embedded_manifest(&packed).unwrap().unwrap(), "name = 'x'");
    }

    #[test]
    fn repacking_replaces_the_manifest() {
        let once = pack(EMPTY_COMPONENT, &"a".repeat(300));
        let twice = pack(&once, "b");
        assert_eq!(embedded_manifest(&twice).unwrap().unwrap(), "b");
        assert_eq!(twice.len(), pack(EMPTY_COMPONENT, "b").len());
    }

    #[test]
    fn no_section_means_none() {
        assert!(embedded_manifest(EMPTY_COMPONENT).is_none());
    }
}
