//! Text to vectors: the [`Embedder`] trait and the built-in
//! [`HashedEmbedder`].

/// Turns texts into vectors of [`dim`](Embedder::dim) numbers.
///
/// [`id`](Embedder::id) names the model and its settings; every stored
/// vector records it, and vectors of different ids are never compared. Give
/// a changed model a new id.
pub trait Embedder: Send + Sync {
    /// Stable name of the model and its settings, e.g. `keel-hashed-v1`.
    fn id(&self) -> &str;
    /// Length of every vector this embedder returns.
    fn dim(&self) -> usize;
    /// One vector per text, in order. Batching lets model-backed embedders
    /// make one request for many texts. Someone is waiting on the answer
    /// (a recall, a note being written).
    fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>>;
    /// As [`embed`](Embedder::embed), for work nobody waits on (reindexing,
    /// bulk writes): an embedder that shares its cores lets foreground calls
    /// go first and may take longer here.
    fn embed_background(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        self.embed(texts)
    }
    /// As [`embed`](Embedder::embed) or
    /// [`embed_background`](Embedder::embed_background) by `lane`, for an
    /// embedder that can fail for reasons other than a bug (a model server
    /// that is down, a budget spent): the error says what happened and what
    /// to do, and reaches the caller as `unavailable`.
    fn try_embed(&self, texts: &[&str], lane: Lane) -> Result<Vec<Vec<f32>>, String> {
        Ok(match lane {
            Lane::Foreground => self.embed(texts),
            Lane::Background => self.embed_background(texts),
        })
    }
    /// One line for people: the id and where the model comes from.
    fn describe(&self) -> String {
        self.id().to_owned()
    }
}

/// The vectors of `embedded`, or none when the embedder failed (logged,
/// naming `id`): `embed` for an embedder whose `try_embed` can fail. The
/// index refuses the empty answer and names the embedder.
pub fn vectors_or_logged(id: &str, embedded: Result<Vec<Vec<f32>>, String>) -> Vec<Vec<f32>> {
    embedded.unwrap_or_else(|reason| {
        tracing::error!(embedder = id, "embedding failed: {reason}");
        Vec::new()
    })
}

/// Who waits on an embedding; see [`Embedder::embed_background`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// A caller waits: recalls, notes written by a call.
    Foreground,
    /// Nobody waits: reindexing, bulk writes.
    Background,
}

/// Feature weight of a whole word.
const UNIGRAM_WEIGHT: f32 = 1.0;
/// Feature weight of two adjacent words: word order and phrases.
const BIGRAM_WEIGHT: f32 = 0.7;
/// Feature weight of three adjacent characters of a word (with a space
/// before and after it): typos, plurals and word forms still overlap.
const TRIGRAM_WEIGHT: f32 = 0.4;

/// The built-in embedder: deterministic, offline, and free.
///
/// Text is lowercased and everything that is not a letter or digit becomes
/// a space. Words, adjacent word pairs and each word's character 3-grams are
/// hashed (FNV-1a, then a 64-bit finalizer) into [`HashedEmbedder::DIM`]
/// buckets with a hash-chosen sign, so collisions cancel out on average
/// instead of piling up; the sum is L2-normalised. A text without words
/// gives the zero vector, similar to nothing.
///
/// It matches shared words and word forms, not meaning: "car" and
/// "automobile" are unrelated to it. A model-backed [`Embedder`] can replace
/// it; notes keep the id of the embedder that made them.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashedEmbedder;

impl HashedEmbedder {
    /// Change it whenever the output for some text changes.
    pub const ID: &'static str = "keel-hashed-v1";
    /// Vector length: small enough for fast scans, large enough that
    /// unrelated short texts rarely collide.
    pub const DIM: usize = 384;

    /// The vector of one text.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let normalized: String =
            text.chars().flat_map(char::to_lowercase).map(|c| if c.is_alphanumeric() { c } else { ' ' }).collect();
        let words: Vec<&str> = normalized.split_whitespace().collect();
        let mut v = vec![0f32; Self::DIM];
        let mut add = |h: u64, weight: f32| {
            let h = fmix64(h);
            let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
            v[(h % Self::DIM as u64) as usize] += sign * weight;
        };
        for (i, word) in words.iter().enumerate() {
            add(Fnv::new(b'w').bytes(word.as_bytes()).0, UNIGRAM_WEIGHT);
            if let Some(next) = words.get(i + 1) {
                add(Fnv::new(b'b').bytes(word.as_bytes()).bytes(b" ").bytes(next.as_bytes()).0, BIGRAM_WEIGHT);
            }
            let padded: Vec<char> = std::iter::once(' ').chain(word.chars()).chain(std::iter::once(' ')).collect();
            for gram in padded.windows(3) {
                let mut h = Fnv::new(b'c');
                for c in gram {
                    h = h.bytes(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
                add(h.0, TRIGRAM_WEIGHT);
            }
        }
        let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x = (f64::from(*x) / norm) as f32);
        }
        v
    }
}

impl Embedder for HashedEmbedder {
    fn id(&self) -> &str {
        Self::ID
    }

    fn dim(&self) -> usize {
        Self::DIM
    }

    fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        texts.iter().map(|t| self.embed_one(t)).collect()
    }

    fn describe(&self) -> String {
        format!("{} (built in, hashed words and word pieces)", Self::ID)
    }
}

/// FNV-1a 64, started with a feature-kind byte so a word and a 3-gram with
/// the same letters land in different buckets. Stable across platforms and
/// Rust versions, unlike `std`'s hashers.
struct Fnv(u64);

impl Fnv {
    fn new(kind: u8) -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325).bytes(&[kind])
    }

    fn bytes(mut self, bytes: &[u8]) -> Fnv {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }
}

/// MurmurHash3's finalizer: FNV's low bits are weak, bucket and sign need
/// every input bit mixed in.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn vectors_are_deterministic_unit_length_and_sized() {
        let e = HashedEmbedder;
        let a = e.embed(&["The quick brown fox", "The quick brown fox"]);
        assert_eq!(a[0], a[1]);
        assert_eq!(a[0].len(), HashedEmbedder::DIM);
        let norm: f32 = a[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }

    #[test]
    fn case_and_punctuation_do_not_matter() {
        let e = HashedEmbedder;
        assert_eq!(e.embed_one("Hello, World!"), e.embed_one("hello world"));
        assert_eq!(e.embed_one("ÉTÉ"), e.embed_one("été"));
    }

    #[test]
    fn a_text_without_words_is_the_zero_vector() {
        assert!(HashedEmbedder.embed_one(" ,.;! ").iter().all(|x| *x == 0.0));
    }

    #[test]
    fn shared_words_and_word_forms_are_closer_than_unrelated_text() {
        let e = HashedEmbedder;
        let q = e.embed_one("invoice from the cloud provider");
        let related = e.embed_one("the cloud provider sent invoices for March");
        let unrelated = e.embed_one("my cat sleeps on the sofa all afternoon");
        let (r, u) = (cos(&q, &related), cos(&q, &unrelated));
        assert!(r > 0.4 && u < 0.2 && r > u + 0.3, "related {r}, unrelated {u}");
        let typo = cos(&e.embed_one("reconciliation"), &e.embed_one("reconcilation"));
        assert!(typo > 0.5, "typo {typo}");
    }

    /// Guards [`HashedEmbedder::ID`]: if this fails, the output changed, and
    /// stored vectors no longer match new ones. Bump the id, then the pins.
    #[test]
    fn output_is_pinned_to_the_id() {
        let v = HashedEmbedder.embed_one("Remember: the deploy key rotates on Fridays.");
        let nonzero: Vec<usize> = (0..v.len()).filter(|i| v[*i] != 0.0).collect();
        let checksum: f64 = v.iter().enumerate().map(|(i, x)| (i as f64 + 1.0) * f64::from(*x)).sum();
        assert_eq!((nonzero.len(), &nonzero[..4]), PINNED_NONZERO, "checksum {checksum}");
        assert!((checksum - PINNED_CHECKSUM).abs() < 1e-3, "checksum {checksum}");
    }

    const PINNED_NONZERO: (usize, &[usize]) = (44, &[8, 11, 12, 19]);
    const PINNED_CHECKSUM: f64 = 127.097_171_515;
}
