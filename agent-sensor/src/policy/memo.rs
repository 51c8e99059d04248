//! Bounded memory of per-path answers: builds and clones ask about the same files over and
//! over, and glob matching is the dearest question the detectors ask per file event.

use std::sync::Mutex;

/// Answers by path, at most `kept` of them: when full it starts over (what a build asks
/// about next is what it asked about last, so a cleared memo refills at once).
#[derive(Debug)]
pub(crate) struct PathMemo<V> {
    answers: Mutex<crate::fasthash::HashMap<Box<[u8]>, V>>,
    kept: usize,
}

impl<V: Copy> PathMemo<V> {
    pub(crate) fn new(kept: usize) -> Self {
        Self {
            answers: Mutex::default(),
            kept,
        }
    }

    pub(crate) fn get(&self, path: &[u8]) -> Option<V> {
        self.answers.lock().ok()?.get(path).copied()
    }

    pub(crate) fn put(&self, path: &[u8], answer: V) {
        if let Ok(mut answers) = self.answers.lock() {
            if answers.len() >= self.kept {
                answers.clear();
            }
            answers.insert(path.into(), answer);
        }
    }

    /// The answer for `path`, computed by `answer` only when not remembered.
    pub(crate) fn get_or(&self, path: &[u8], answer: impl FnOnce() -> V) -> V {
        if let Some(known) = self.get(path) {
            return known;
        }
        let computed = answer();
        self.put(path, computed);
        computed
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.answers.lock().map_or(0, |answers| answers.len())
    }
}

/// A clone starts with an empty memory (clones are made for another agent or policy).
impl<V: Copy> Clone for PathMemo<V> {
    fn clone(&self) -> Self {
        Self::new(self.kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_remembered_and_bounded() {
        let memo = PathMemo::new(4);
        let mut asked = 0;
        for round in 0..2 {
            assert!(memo.get_or(b"/a", || {
                asked += 1;
                true
            }));
            assert_eq!(asked, 1, "round {round}");
        }
        for n in 0..9 {
            memo.put(format!("/f{n}").as_bytes(), false);
            assert!(memo.len() <= 4);
        }
        assert_eq!(memo.clone().len(), 0);
    }
}
