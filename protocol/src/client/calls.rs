//! Which answer is whose: the one call-id table of every client end (the host transport's
//! client, the Linux client). Answers come off the ring in any order; a waiter takes its own
//! and leaves the others for theirs; a waiter that gave up abandons its call, and the answer
//! that comes late is dropped, counted, never handed to anyone. Bounded by the calls in
//! flight: an entry goes when its answer is taken or, abandoned, when the answer comes.

use alloc::vec::Vec;

use super::Completion;

/// What the table knows of one call. (Answers inline: a table holds a few, and boxing each
/// would cost an allocation per call.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum State<M> {
    /// Started, not answered yet; `M` is the end's own note (when it was sent).
    Waiting(M),
    /// Answered, the answer not taken yet.
    Answered(Completion),
    /// Its waiter gave up; the answer, when it comes, is dropped.
    Abandoned,
}

/// What became of an answer off the ring ([`CallTable::arrived`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival<M> {
    /// Kept for its waiter, with the note the call was started with (`None` for a call the
    /// table did not see start).
    Kept(Option<M>),
    /// The call was abandoned: the answer is dropped.
    Late,
}

/// The calls of one connection, by call id (see the module docs).
#[derive(Debug)]
pub struct CallTable<M> {
    entries: Vec<(u64, State<M>)>,
}

impl<M> Default for CallTable<M> {
    fn default() -> Self {
        CallTable {
            entries: Vec::new(),
        }
    }
}

impl<M> CallTable<M> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn find(&self, id: u64) -> Option<usize> {
        self.entries.iter().position(|(e, _)| *e == id)
    }

    /// Call `id` was started, with the end's note `note`.
    pub fn started(&mut self, id: u64, note: M) {
        match self.find(id) {
            Some(at) => self.entries[at].1 = State::Waiting(note),
            None => self.entries.push((id, State::Waiting(note))),
        }
    }

    /// An answer came off the ring.
    pub fn arrived(&mut self, completion: Completion) -> Arrival<M> {
        let id = completion.call_id;
        let Some(at) = self.find(id) else {
            self.entries.push((id, State::Answered(completion)));
            return Arrival::Kept(None);
        };
        match core::mem::replace(&mut self.entries[at].1, State::Answered(completion)) {
            State::Waiting(note) => Arrival::Kept(Some(note)),
            State::Abandoned => {
                self.entries.swap_remove(at);
                Arrival::Late
            }
            // A second answer to one call (no server sends it): the newer is kept.
            State::Answered(_) => Arrival::Kept(None),
        }
    }

    /// The answer to call `id`, if it came (then the table forgets the call).
    pub fn take(&mut self, id: u64) -> Option<Completion> {
        let at = self.find(id)?;
        if !matches!(self.entries[at].1, State::Answered(_)) {
            return None;
        }
        match self.entries.swap_remove(at).1 {
            State::Answered(completion) => Some(completion),
            _ => None,
        }
    }

    /// Any answer that came and was not taken (the oldest kept first is not promised).
    pub fn take_any(&mut self) -> Option<Completion> {
        let at = self
            .entries
            .iter()
            .position(|(_, s)| matches!(s, State::Answered(_)))?;
        match self.entries.swap_remove(at).1 {
            State::Answered(completion) => Some(completion),
            _ => None,
        }
    }

    /// The waiter of call `id` gave up: an answer already there is dropped, a later one will
    /// be ([`Arrival::Late`]).
    pub fn abandon(&mut self, id: u64) {
        match self.find(id) {
            Some(at) if matches!(self.entries[at].1, State::Answered(_)) => {
                self.entries.swap_remove(at);
            }
            Some(at) => self.entries[at].1 = State::Abandoned,
            None => self.entries.push((id, State::Abandoned)),
        }
    }

    /// Calls the table holds (waiting, answered or abandoned).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    fn answer(id: u64) -> Completion {
        Completion::for_test(id)
    }

    #[test]
    fn each_waiter_takes_its_own_answer_whatever_the_order() {
        let mut table = CallTable::new();
        for id in 1..=3 {
            table.started(id, id * 10);
        }
        assert_eq!(table.arrived(answer(3)), Arrival::Kept(Some(30)));
        assert_eq!(table.arrived(answer(1)), Arrival::Kept(Some(10)));
        assert!(table.take(2).is_none());
        assert_eq!(table.take(1).map(|c| c.call_id), Some(1));
        assert_eq!(table.take_any().map(|c| c.call_id), Some(3));
        assert!(table.take_any().is_none());
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn an_abandoned_calls_answer_is_dropped_and_the_table_forgets_it() {
        let mut table = CallTable::new();
        table.started(7, ());
        table.abandon(7);
        assert_eq!(table.arrived(answer(7)), Arrival::Late);
        assert!(table.is_empty());
        // Abandoned after its answer came: dropped at once.
        table.started(8, ());
        table.arrived(answer(8));
        table.abandon(8);
        assert!(table.take(8).is_none() && table.is_empty());
    }

    #[test]
    fn an_answer_to_a_call_it_never_saw_is_kept_for_its_waiter() {
        let mut table = CallTable::<()>::new();
        assert_eq!(table.arrived(answer(5)), Arrival::Kept(None));
        assert_eq!(table.take(5).map(|c| c.call_id), Some(5));
    }
}
